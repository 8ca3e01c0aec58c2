"""Load a campaign YAML file and report every field-level problem with file, path and reason.

A campaign is an error of the file when any value in it is wrong by itself: a bad type, an
out-of-range number, an unknown key (with a suggestion where one is close), a grid axis
that names no field. Combinations of individually valid values that conflict are *not*
errors here; :func:`llem_core.campaign.grid.expand` filters them.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from llem_core.campaign.config import CampaignConfig, ExperimentConfig, RunnerConfig
from llem_core.campaign.errors import CampaignFileError, FieldError
from llem_core.campaign.grid_limits import grid_size_error
from llem_core.campaign.paths import (
    model_warnings,
    mount_target_errors,
    prompt_file_errors,
    resolve_paths,
    results_dir_errors,
)
from llem_core.campaign.schedule import window_warnings
from llem_core.campaign.text import read_campaign_text
from llem_core.campaign.yaml_safe import (
    YamlProblems,
    data_problem,
    load_bounded,
)

__all__ = ["CampaignFileError", "FieldError", "LoadedCampaign", "load_campaign",
           "parse_campaign_text", "read_campaign_text", "validate_campaign_data"]

# Stands in for `model` while base or a grid value is checked alone, when the model is
# given elsewhere (a grid axis, or each explicit experiment).
_PLACEHOLDER_MODEL = "placeholder/model"
_UNION_TAGS = {"prompts": {"builtin", "jsonl"}, "runner": {"docker", "local"}}
MAX_ERRORS = 100  # reported per file; the rest are counted


@dataclass
class LoadedCampaign:
    path: Path
    config: CampaignConfig
    warnings: list[str] = field(default_factory=list)


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


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted paths ({"a": {"b": 1}} -> {"a.b": 1}); ``extra`` (free
    metadata) and empty mappings stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "extra":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
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
    found = exc.errors(include_url=False)
    for err in found[:MAX_ERRORS]:  # suggestions cost: a file of 40,000 bad keys stays fast
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
    if len(found) > MAX_ERRORS:
        errors.append(FieldError(prefix.rstrip(".") or "(top level)",
                                 f"{len(found) - MAX_ERRORS} more problems not shown"))
    return errors


def _is_tag(loc: tuple[int | str, ...], part: int | str) -> bool:
    idx = loc.index(part)
    return idx > 0 and loc[idx - 1] in _UNION_TAGS and part in _UNION_TAGS[str(loc[idx - 1])]


@dataclass
class _Parts:
    """The parts of a campaign checked field by field: base, axes, experiments, group_by.
    Built from the raw data when the campaign as a whole is invalid, keeping the parts
    that have the right shape, so that every problem of a file is reported in one pass."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]
    experiments: list[tuple[int, dict[str, Any]]]
    group_by: list[tuple[int, str]]

    @classmethod
    def of(cls, data: dict[str, Any]) -> _Parts | None:
        base = data.get("base", {})
        if not isinstance(base, dict):
            return None
        grid = data.get("grid", {})
        exps = data.get("experiments", [])
        group_by = data.get("group_by", [])
        return cls(
            base=base,
            grid={k: v for k, v in grid.items() if isinstance(k, str) and isinstance(v, list)
                  and v} if isinstance(grid, dict) else {},
            experiments=[(i, e) for i, e in enumerate(exps) if isinstance(e, dict)]
            if isinstance(exps, list) else [],
            group_by=[(i, g) for i, g in enumerate(group_by) if isinstance(g, str)]
            if isinstance(group_by, list) else [])


def _without_bad_keys(base: dict[str, Any], exc: ValidationError) -> dict[str, Any]:
    """base without its invalid top-level keys: grid values and experiments are then still
    checked against the rest, without repeating base's own errors."""
    bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    out = {k: v for k, v in base.items() if k not in bad}
    if "model" in bad:
        out["model"] = _PLACEHOLDER_MODEL
    return out


def _valid(experiment: dict[str, Any]) -> bool:
    try:
        ExperimentConfig.model_validate(experiment)
    except ValidationError:
        return False
    return True


def _check_experiment_parts(parts: _Parts) -> list[FieldError]:
    """Field-level checks of base, of each grid value and of each explicit experiment."""
    errors: list[FieldError] = []
    model_elsewhere = "model" in parts.grid or (
        parts.experiments and all("model" in e for _, e in parts.experiments)
    )
    base = dict(parts.base)
    if "model" not in base:
        if not model_elsewhere:
            errors.append(FieldError(
                "base.model",
                "required field is missing (set it in base, as a grid axis, or in every "
                "explicit experiment)",
            ))
        base["model"] = _PLACEHOLDER_MODEL
    try:
        ExperimentConfig.model_validate(base)
    except ValidationError as exc:
        errors.extend(pydantic_errors(exc, ExperimentConfig, "base."))
        base = _without_bad_keys(base, exc)
    base_ok = _valid(base)

    for axis, values in parts.grid.items():
        problem = resolve_field_path(axis)
        if problem:
            errors.append(FieldError(f"grid.{axis}", problem))
            continue
        if not base_ok:
            continue
        for i, value in enumerate(values):
            if len(errors) > MAX_ERRORS:
                return errors
            try:
                ExperimentConfig.model_validate(set_path(base, axis, value))
            except ValidationError as exc:
                for e in pydantic_errors(exc, ExperimentConfig):
                    errors.append(FieldError(f"grid.{axis}[{i}]", f"{value!r}: {e.reason}"
                                             if e.path == axis else f"{e.path}: {e.reason}"))

    for i, override in parts.experiments:
        if len(errors) > MAX_ERRORS:
            return errors
        try:
            ExperimentConfig.model_validate(deep_merge(base, override))
        except ValidationError as exc:
            for e in pydantic_errors(exc, ExperimentConfig):
                if e.path.split(".")[0].split("[")[0] in override or not base_ok:
                    errors.append(FieldError(f"experiments[{i}].{e.path}", e.reason))

    for i, key in parts.group_by:
        problem = resolve_field_path(key)
        if problem:
            errors.append(FieldError(f"group_by[{i}]", problem))
    return errors


def _runner_errors(data: dict[str, Any], base_dir: Path | None) -> list[FieldError]:
    """Trust-policy problems of the runner alone, for a file whose other parts are invalid."""
    from llem_core.campaign.paths import fix_program
    from llem_core.campaign.trust import runner_policy_errors

    try:
        runner = TypeAdapter(RunnerConfig).validate_python(data.get("runner", {}))
    except ValidationError:
        return []  # already reported by the campaign's own validation
    if getattr(runner, "python", None) is not None and base_dir is not None:
        runner = runner.model_copy(update={"python": fix_program(runner.python, base_dir)})
    return runner_policy_errors(runner)


def _unique(errors: list[FieldError]) -> list[FieldError]:
    unique = list(dict.fromkeys(errors))
    cap = 2 * MAX_ERRORS  # each part already counts what it left out beyond MAX_ERRORS
    if len(unique) <= cap:
        return unique
    return [*unique[:cap], FieldError("(file)", f"{len(unique) - cap} more problems not shown")]


def check_campaign_data(
    data: Any, file: str, base_dir: Path | None = None
) -> tuple[CampaignConfig, list[str]]:
    """Validate parsed YAML: (config with absolute paths, warnings); raise CampaignFileError
    listing every problem found."""
    from llem_core.campaign.runner_rules import runner_reach_errors
    from llem_core.campaign.trust import policy_errors

    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "an empty document"
        raise CampaignFileError(
            file, [FieldError("(top level)", f"expected a mapping, got {kind}")])
    too_big = data_problem(data)  # for data that did not come through load_bounded
    if too_big:
        raise CampaignFileError(file, [FieldError(too_big.where, too_big.reason)])
    errors: list[FieldError] = []
    cfg: CampaignConfig | None = None
    try:
        cfg = CampaignConfig.model_validate(data)
    except ValidationError as exc:
        errors.extend(pydantic_errors(exc, CampaignConfig))
        errors.extend(_runner_errors(data, base_dir))
    parts = _Parts.of(data)
    if parts is not None:
        too_large = grid_size_error(parts.base, parts.grid, [e for _, e in parts.experiments])
        # A grid past the limit is not checked value by value: that alone could be slow.
        errors.extend([too_large] if too_large else _check_experiment_parts(parts))
    if errors or cfg is None:
        raise CampaignFileError(file, _unique(errors))
    cfg = resolve_paths(cfg, base_dir)
    errors = (prompt_file_errors(cfg) + mount_target_errors(cfg) + results_dir_errors(cfg)
              + policy_errors(cfg) + runner_reach_errors(cfg))
    if errors:
        raise CampaignFileError(file, _unique(errors))
    return cfg, model_warnings(cfg) + window_warnings(cfg.schedule, cfg.schedule_window)


def validate_campaign_data(data: Any, file: str, base_dir: Path | None = None) -> CampaignConfig:
    """Validate parsed YAML; raise CampaignFileError listing every problem found."""
    return check_campaign_data(data, file, base_dir)[0]


def parse_campaign_text(text: str, path: str | Path) -> LoadedCampaign:
    """Parse (bounded YAML) and validate a campaign's text; paths relative to ``path``."""
    p = Path(path)
    file = str(path)
    try:
        data = load_bounded(text)
    except YamlProblems as exc:
        raise CampaignFileError(
            file, [FieldError(e.where, e.reason) for e in exc.problems]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise CampaignFileError(file, [FieldError(where, f"invalid YAML: {problem}")]) from None
    cfg, warnings = check_campaign_data(data, file, p.parent.resolve())
    return LoadedCampaign(p, cfg, warnings)


def load_campaign(path: str | Path) -> LoadedCampaign:
    """Read and validate a campaign file. Never loads a model or touches the network."""
    return parse_campaign_text(read_campaign_text(path), path)
