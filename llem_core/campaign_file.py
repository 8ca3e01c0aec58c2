"""Load a campaign YAML file and report every field-level problem with file, path and reason.

A campaign is an error of the file when any value in it is wrong by itself: a bad type, an
out-of-range number, an unknown key (with a suggestion where one is close), a grid axis
that names no field. Combinations of individually valid values that conflict are *not*
errors here; :func:`llem_core.grid.expand` filters them.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from llem_core.config import CampaignConfig, ExperimentConfig, resolve_model_path

# Stands in for `model` while base or a grid value is checked alone, when the model is
# given elsewhere (a grid axis, or each explicit experiment).
_PLACEHOLDER_MODEL = "placeholder/model"
_UNION_TAGS = {"prompts": {"builtin", "jsonl"}, "runner": {"docker", "local"}}


@dataclass(frozen=True)
class FieldError:
    path: str
    reason: str


@dataclass
class CampaignFileError(Exception):
    """A campaign file that cannot be used; ``str()`` gives one ``file: path: reason`` line each."""

    file: str
    errors: list[FieldError] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{self.file}: {e.path}: {e.reason}" for e in self.errors]

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass
class LoadedCampaign:
    path: Path
    config: CampaignConfig


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('experiments', 2, 'dtype') -> 'experiments[2].dtype', dropping union tags."""
    out = ""
    prev: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif prev in _UNION_TAGS and part in _UNION_TAGS[prev]:
            pass
        else:
            out += ("." if out else "") + part
        prev = part
    return out or "(top level)"


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_model_classes(arg))
    return found


def _is_free_mapping(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is dict:
        return True
    return any(_is_free_mapping(a) for a in get_args(annotation))


def fields_at(root: type[BaseModel], loc: list[int | str]) -> list[str]:
    """Names of the fields valid at ``loc`` inside ``root`` (for "did you mean" hints)."""
    classes = [root]
    for part in loc:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for cls in classes:
            info = cls.model_fields.get(str(part))
            if info is not None:
                nxt.extend(_model_classes(info.annotation))
        if not nxt:
            return []
        classes = nxt
    names: list[str] = []
    for cls in classes:
        names.extend(n for n in cls.model_fields if n not in names)
    return names


def suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def resolve_field_path(path: str) -> str | None:
    """Check that a dotted path names a field of ExperimentConfig; return an error or None."""
    parts = path.split(".")
    classes: list[type[BaseModel]] = [ExperimentConfig]
    for i, part in enumerate(parts):
        infos = [c.model_fields[part] for c in classes if part in c.model_fields]
        if not infos:
            known = [n for c in classes for n in c.model_fields]
            where = ".".join(parts[:i]) or "an experiment"
            return f"{part!r} is not a field of {where}{suggest(part, known)}"
        if i == len(parts) - 1:
            return None
        if any(_is_free_mapping(info.annotation) for info in infos):
            return None  # e.g. extra.anything: free metadata
        nested = [m for info in infos for m in _model_classes(info.annotation)]
        if not nested:
            return f"{'.'.join(parts[: i + 1])} is a value, it has no field {parts[i + 1]!r}"
        classes = nested
    return None


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a deep copy of ``data`` with the dotted ``path`` set to ``value``."""
    out = copy.deepcopy(data)
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def pydantic_errors(
    exc: ValidationError, root: type[BaseModel], prefix: str = ""
) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            name = str(loc[-1])
            parent = [p for p in loc[:-1] if not _is_tag(loc, p)]
            reason = f"unknown key {name!r}{suggest(name, fields_at(root, list(parent)))}"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx", {})
            reason = f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        elif err["type"] == "missing":
            reason = "required field is missing"
        elif reason.startswith("Value error, "):
            reason = reason.removeprefix("Value error, ")
        path = format_loc(loc)
        errors.append(FieldError(f"{prefix}{path}" if prefix else path, reason))
    return errors


def _is_tag(loc: tuple[int | str, ...], part: int | str) -> bool:
    idx = loc.index(part)
    return idx > 0 and loc[idx - 1] in _UNION_TAGS and part in _UNION_TAGS[str(loc[idx - 1])]


def _check_experiment_parts(cfg: CampaignConfig) -> list[FieldError]:
    """Field-level checks of base, of each grid value and of each explicit experiment."""
    errors: list[FieldError] = []
    model_elsewhere = "model" in cfg.grid or (
        cfg.experiments and all("model" in e for e in cfg.experiments)
    )
    base = dict(cfg.base)
    if "model" not in base:
        if not model_elsewhere:
            errors.append(FieldError(
                "base.model",
                "required field is missing (set it in base, as a grid axis, or in every "
                "explicit experiment)",
            ))
        base["model"] = _PLACEHOLDER_MODEL
    base_ok = True
    try:
        ExperimentConfig.model_validate(base)
    except ValidationError as exc:
        base_ok = False
        errors.extend(pydantic_errors(exc, ExperimentConfig, "base."))

    for axis, values in cfg.grid.items():
        problem = resolve_field_path(axis)
        if problem:
            errors.append(FieldError(f"grid.{axis}", problem))
            continue
        if not base_ok:
            continue
        for i, value in enumerate(values):
            try:
                ExperimentConfig.model_validate(set_path(base, axis, value))
            except ValidationError as exc:
                for e in pydantic_errors(exc, ExperimentConfig):
                    errors.append(FieldError(f"grid.{axis}[{i}]", f"{value!r}: {e.reason}"
                                             if e.path == axis else f"{e.path}: {e.reason}"))

    for i, override in enumerate(cfg.experiments):
        try:
            ExperimentConfig.model_validate(deep_merge(base, override))
        except ValidationError as exc:
            for e in pydantic_errors(exc, ExperimentConfig):
                if e.path.split(".")[0].split("[")[0] in override or not base_ok:
                    errors.append(FieldError(f"experiments[{i}].{e.path}", e.reason))

    for i, key in enumerate(cfg.group_by):
        problem = resolve_field_path(key)
        if problem:
            errors.append(FieldError(f"group_by[{i}]", problem))
    return errors


def validate_campaign_data(data: Any, file: str, base_dir: Path | None = None) -> CampaignConfig:
    """Validate parsed YAML; raise CampaignFileError listing every problem found."""
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "an empty document"
        raise CampaignFileError(
            file, [FieldError("(top level)", f"expected a mapping, got {kind}")])
    try:
        cfg = CampaignConfig.model_validate(data)
    except ValidationError as exc:
        raise CampaignFileError(file, pydantic_errors(exc, CampaignConfig)) from None
    errors = _check_experiment_parts(cfg)
    if errors:
        raise CampaignFileError(file, errors)
    return _resolve_paths(cfg, base_dir)


def _resolve_paths(cfg: CampaignConfig, base_dir: Path | None) -> CampaignConfig:
    """Local model and prompt paths are relative to the campaign file: make them absolute."""
    if base_dir is None:
        return cfg

    def fix(fragment: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(fragment)
        if isinstance(out.get("model"), str):
            out["model"] = resolve_model_path(out["model"], base_dir)
        prompts = out.get("prompts")
        if isinstance(prompts, dict) and isinstance(prompts.get("path"), str):
            p = Path(prompts["path"]).expanduser()
            prompts["path"] = str(p if p.is_absolute() else (base_dir / p).resolve())
        return out

    grid = dict(cfg.grid)
    if "model" in grid:
        grid["model"] = [resolve_model_path(m, base_dir) if isinstance(m, str) else m
                         for m in grid["model"]]
    if "prompts.path" in grid:
        grid["prompts.path"] = [str((base_dir / Path(p).expanduser()).resolve())
                                for p in grid["prompts.path"]]
    results = Path(cfg.results_dir).expanduser()
    return cfg.model_copy(update={
        "base": fix(cfg.base),
        "grid": grid,
        "experiments": [fix(e) for e in cfg.experiments],
        "results_dir": str(results if results.is_absolute() else (base_dir / results).resolve()),
    })


def load_campaign(path: str | Path) -> LoadedCampaign:
    """Read and validate a campaign file. Never loads a model or touches the network."""
    p = Path(path)
    file = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CampaignFileError(file, [FieldError("(file)", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignFileError(file, [FieldError("(file)", f"cannot read: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise CampaignFileError(file, [FieldError(where, f"invalid YAML: {problem}")]) from None
    return LoadedCampaign(p, validate_campaign_data(data, file, p.parent.resolve()))
