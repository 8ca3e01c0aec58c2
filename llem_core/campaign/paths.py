"""Paths inside a campaign: resolved against the campaign file, then checked on disk.

A relative path means the same thing wherever it is written (base, a grid axis, an
explicit experiment): relative to the campaign file. JSONL prompt files must be readable
where the campaign is validated (a bad line would otherwise fail every experiment of the
run, one by one); local model folders often live only on the GPU servers, so a missing
one is a warning.
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llem_core.campaign.config import (
    CampaignConfig,
    DockerRunner,
    LocalRunner,
    is_local_path,
    resolve_model_path,
)
from llem_core.campaign.errors import FieldError
from llem_core.runtime.engines import engines

MAX_CHECKED_LINES = 1000  # the first lines of a prompts file are checked, for speed
MAX_LINE_BYTES = 4 << 20
MAX_CHECKED_BYTES = 16 << 20
MAX_REPORTED = 3  # bad lines reported per file


def _abs(path: str, base_dir: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def _fix_prompts(prompts: Any, base_dir: Path) -> Any:
    if isinstance(prompts, dict) and isinstance(prompts.get("path"), str):
        return {**prompts, "path": _abs(prompts["path"], base_dir)}
    return prompts


def fix_program(path: Any, base_dir: Path) -> Any:
    """A program written as a relative path ('../.venv-vllm/bin/python') is relative to the
    campaign file; a bare name ('python3') is looked up on the PATH where it runs. Symlinks
    are kept: a venv's python is a link whose target runs without the venv."""
    if isinstance(path, str) and "/" in path and not path.startswith(("/", "~")):
        return os.path.normpath(base_dir / path)
    return path


def _interpreter_fields() -> dict[str, list[str]]:
    """The engine sections' interpreter fields (``vllm.python``, ...), by section: a
    relative interpreter means the same wherever it is written."""
    out: dict[str, list[str]] = {}
    for engine in engines().values():
        for program in engine.programs:
            if engine.section is not None and program.allow_list == "python":
                out.setdefault(engine.section, []).append(program.field)
    return out


def _fix_section(section: Any, fields: list[str], base_dir: Path) -> Any:
    if not isinstance(section, dict):
        return section
    return {**section, **{f: fix_program(section[f], base_dir) for f in fields
                          if f in section}}


def _fix_fragment(fragment: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    out = copy.deepcopy(fragment)
    if isinstance(out.get("model"), str):
        out["model"] = resolve_model_path(out["model"], base_dir)
    if "prompts" in out:
        out["prompts"] = _fix_prompts(out["prompts"], base_dir)
    for section, fields in _interpreter_fields().items():
        if section in out:
            out[section] = _fix_section(out[section], fields, base_dir)
    return out


def resolve_paths(cfg: CampaignConfig, base_dir: Path | None) -> CampaignConfig:
    """Make local model, prompt and results paths and the interpreters llem starts
    (``runner.python``, ``vllm.python`` and the other engines') absolute, relative to the
    campaign file."""
    if base_dir is None:
        return cfg
    grid = dict(cfg.grid)
    if "model" in grid:
        grid["model"] = [resolve_model_path(m, base_dir) if isinstance(m, str) else m
                         for m in grid["model"]]
    if "prompts.path" in grid:
        grid["prompts.path"] = [_abs(p, base_dir) if isinstance(p, str) else p
                                for p in grid["prompts.path"]]
    if "prompts" in grid:
        grid["prompts"] = [_fix_prompts(p, base_dir) for p in grid["prompts"]]
    for section, fields in _interpreter_fields().items():
        for f in fields:
            if f"{section}.{f}" in grid:
                grid[f"{section}.{f}"] = [fix_program(p, base_dir)
                                          for p in grid[f"{section}.{f}"]]
        if section in grid:
            grid[section] = [_fix_section(v, fields, base_dir) for v in grid[section]]
    runner = cfg.runner
    if isinstance(runner, LocalRunner) and runner.python is not None:
        # as vllm.python: relative to the campaign file, never to the worker's folder
        runner = runner.model_copy(update={"python": fix_program(runner.python, base_dir)})
    return cfg.model_copy(update={
        "base": _fix_fragment(cfg.base, base_dir),
        "grid": grid,
        "experiments": [_fix_fragment(e, base_dir) for e in cfg.experiments],
        "results_dir": _abs(cfg.results_dir, base_dir),
        "runner": runner,
    })


def _jsonl(prompts: Any) -> tuple[str, str] | None:
    """(path, field) of a JSONL prompt source, None for any other value."""
    if isinstance(prompts, dict) and prompts.get("kind") == "jsonl" \
            and isinstance(prompts.get("path"), str):
        field = prompts.get("field", "text")
        return prompts["path"], field if isinstance(field, str) else "text"
    return None


def prompt_sources(cfg: CampaignConfig) -> Iterator[tuple[str, tuple[str, str]]]:
    """(field path, (file, text field)) of every JSONL prompt source the campaign can use."""
    base = _jsonl(cfg.base.get("prompts"))
    if base:
        yield "base.prompts.path", base
    for i, value in enumerate(cfg.grid.get("prompts", [])):
        src = _jsonl(value)
        if src:
            yield f"grid.prompts[{i}].path", src
    for i, value in enumerate(cfg.grid.get("prompts.path", [])):
        yield f"grid.prompts.path[{i}]", (value, base[1] if base else "text")
    if base:
        for i, value in enumerate(cfg.grid.get("prompts.field", [])):
            yield f"grid.prompts.field[{i}]", (base[0], value)
    for i, exp in enumerate(cfg.experiments):
        if "prompts" in exp:
            merged = {**(cfg.base.get("prompts") or {}), **exp["prompts"]} \
                if isinstance(exp["prompts"], dict) else exp["prompts"]
            src = _jsonl(merged)
            if src:
                yield f"experiments[{i}].prompts.path", src


def _line_problem(raw: bytes, field: str) -> str | None:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not valid JSON ({getattr(exc, 'msg', None) or exc.reason})"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if field not in obj:
        return f"no field {field!r}"
    if not isinstance(obj[field], str):
        return f"field {field!r} is not a string"
    return None


def jsonl_problems(path: str, field: str) -> list[str]:
    """Why a JSONL prompt file is unusable (its first MAX_CHECKED_LINES lines); empty: fine."""
    p = Path(path)
    if not p.is_file():
        return [f"{path}: {'not a regular file' if p.exists() else 'no such file'}"]
    problems: list[str] = []
    prompts = 0
    read = 0
    try:
        with p.open("rb") as fh:
            for lineno in range(1, MAX_CHECKED_LINES + 1):
                raw = fh.readline(MAX_LINE_BYTES + 1)
                read += len(raw)
                if not raw or read > MAX_CHECKED_BYTES:
                    break
                if len(raw) > MAX_LINE_BYTES:
                    problems.append(f"{path}: line {lineno}: longer than {MAX_LINE_BYTES} bytes")
                    break
                if not raw.strip():
                    continue  # blank lines are skipped when prompts are read
                problem = _line_problem(raw, field)
                if problem:
                    problems.append(f"{path}: line {lineno}: {problem}")
                    if len(problems) >= MAX_REPORTED:
                        break
                else:
                    prompts += 1
    except OSError as exc:
        return [f"{path}: cannot read: {exc.strerror or exc}"]
    if not problems and prompts == 0:
        problems.append(f"{path}: holds no prompts")
    return problems


def prompt_file_errors(cfg: CampaignConfig) -> list[FieldError]:
    errors: list[FieldError] = []
    checked: dict[tuple[str, str], list[str]] = {}
    for where, (path, field) in prompt_sources(cfg):
        key = (str(Path(path).expanduser()), field)
        if key not in checked:
            checked[key] = jsonl_problems(*key)
        errors.extend(FieldError(where, reason) for reason in checked[key])
    return errors


def results_dir_errors(cfg: CampaignConfig) -> list[FieldError]:
    """A results folder that exists as something else fails every experiment: say so now."""
    p = Path(cfg.results_dir)
    if p.exists() and not p.is_dir():
        return [FieldError("results_dir", f"{p} exists and is not a folder")]
    return []


def _models(cfg: CampaignConfig) -> Iterator[tuple[str, Any]]:
    yield "base.model", cfg.base.get("model")
    for i, m in enumerate(cfg.grid.get("model", [])):
        yield f"grid.model[{i}]", m
    for i, e in enumerate(cfg.experiments):
        yield f"experiments[{i}].model", e.get("model")


def field_values(cfg: CampaignConfig, dotted: str) -> Iterator[tuple[str, Any]]:
    """(field path, value) of every place the raw campaign sets ``dotted`` (e.g.
    ``vllm.python``): base, each grid value (as a dotted axis or inside a section axis)
    and each explicit experiment."""
    head, _, rest = dotted.partition(".")

    def inside(value: Any) -> tuple[bool, Any]:
        for part in rest.split(".") if rest else []:
            if not isinstance(value, dict) or part not in value:
                return False, None
            value = value[part]
        return True, value

    sources = [("base", cfg.base)] + [(f"experiments[{i}]", e)
                                      for i, e in enumerate(cfg.experiments)]
    for where, fragment in sources:
        if isinstance(fragment, dict) and head in fragment:
            found, value = inside(fragment[head])
            if found:
                yield f"{where}.{dotted}", value
    for i, value in enumerate(cfg.grid.get(dotted, []) if dotted != head else []):
        yield f"grid.{dotted}[{i}]", value
    for i, section in enumerate(cfg.grid.get(head, [])):
        found, value = inside(section)
        if found:
            yield f"grid.{head}[{i}]{'.' + rest if rest else ''}", value


def local_model_paths(cfg: CampaignConfig) -> Iterator[tuple[str, str]]:
    """(field path, path) of every local model folder the campaign names."""
    for where, model in _models(cfg):
        if isinstance(model, str) and is_local_path(model):
            yield where, model


def model_warnings(cfg: CampaignConfig) -> list[str]:
    """A local model folder missing here: fine if it exists on the GPU server, said anyway."""
    return [f"{where}: local model folder {path} does not exist on this machine (it must "
            "exist on the GPU server)"
            for where, path in local_model_paths(cfg) if not Path(path).expanduser().exists()]


def mount_target_errors(cfg: CampaignConfig) -> list[FieldError]:
    """Docker refuses two mounts at one container path (every experiment would fail): the
    results folder is mounted at its host path, runner.model_cache at /models-cache."""
    runner = cfg.runner
    if not isinstance(runner, DockerRunner):
        return []
    taken = {posixpath.normpath(cfg.results_dir): "results_dir"}
    if runner.model_cache:
        taken["/models-cache"] = "runner.model_cache"
    errors = []
    for i, m in enumerate(runner.mounts):
        target = posixpath.normpath(m.target)
        if target in taken:
            errors.append(FieldError(f"runner.mounts[{i}].target", (
                f"{m.target} is already the container path of {taken[target]}")))
        taken.setdefault(target, f"runner.mounts[{i}]")
    return errors

