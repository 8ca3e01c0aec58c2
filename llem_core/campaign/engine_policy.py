"""What a campaign may hand the engines llem launches: vLLM's flags and the environment.

The allow-lists (:mod:`llem_core.runtime.serving.vllm_flags`,
:mod:`llem_core.runtime.serving.engine_env`)
hold what measurement needs; the deployment adds more, in the syntax of every allow-list
(:mod:`llem_core.campaign.trust`: comma-separated, spaces stripped; set but naming nothing, or an
entry of the wrong form, fails closed):

- ``LLEM_ALLOWED_VLLM_FLAGS``: vLLM flags a campaign may pass in ``vllm.extra_args``
  beyond the list, each as written on a command line (``--speculative-config``, ``-cc``;
  '_' and '-' are the same), with any value in any of vLLM's forms (``--f v``, ``--f=v``,
  ``--f.key v``). Flags llem sets and ``--config`` cannot be allowed.
- ``LLEM_ALLOWED_ENGINE_ENV``: variables a campaign may set in an engine's environment
  (``vllm.env``, ``server.env``, ``llamacpp.env``, ...: the field each engine declares)
  beyond the list (``NAME``, or ``PREFIX_*``). Variables that select GPUs or
  load code (``LD_*``, ``PYTHON*``, ``CUDA_INJECTION*``, NCCL's plugins, ``OPENSSL_*``,
  ``TRITON_*``, ...) cannot be allowed.

Checked on the campaign as written (base, each grid value, each explicit experiment) so
that an error names the field that sets it, at load time, as the other trust rules: the
same for ``llem validate`` and the DAG processor.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from llem_core.campaign.config import CampaignConfig
from llem_core.campaign.errors import FieldError
from llem_core.campaign.trust import Misconfigured, allowed_entries, refused
from llem_core.runtime.engines import engines
from llem_core.runtime.serving.engine_env import ENV_NAME, code_env_problem, engine_env_problem
from llem_core.runtime.serving.vllm_flags import (
    normalised_flag,
    vllm_args_problem,
    vllm_flag_problem,
)

ENV_VLLM_FLAGS = "LLEM_ALLOWED_VLLM_FLAGS"
ENV_ENGINE_ENV = "LLEM_ALLOWED_ENGINE_ENV"


def allowed_vllm_flags() -> list[str]:
    """The deployment's extra vLLM flags; :class:`Misconfigured` for a bad entry."""
    flags = allowed_entries(ENV_VLLM_FLAGS) or []
    for flag in flags:
        name = normalised_flag(flag)
        # a flag's name only: no value, no JSON key, no glob (read literally, it would
        # allow nothing), not '-' or '--'
        if "=" in flag or not re.fullmatch(r"--?[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise Misconfigured(f"{ENV_VLLM_FLAGS} entry {flag!r} is not a flag (write it "
                                "as on a command line: --name or -n)")
        if vllm_flag_problem(name) or name in ("--config",):
            raise Misconfigured(f"{ENV_VLLM_FLAGS} entry {flag!r} is a flag llem sets (or "
                                "--config): it cannot be allowed")
    return flags


def allowed_engine_env() -> list[str]:
    """The deployment's extra engine variables; :class:`Misconfigured` for a bad entry."""
    names = allowed_entries(ENV_ENGINE_ENV) or []
    for entry in names:
        stem = entry[:-1] if entry.endswith("*") else entry
        if stem and not ENV_NAME.fullmatch(stem):
            raise Misconfigured(f"{ENV_ENGINE_ENV} entry {entry!r} is not a variable name "
                                "(NAME or PREFIX_*)")
        if stem and code_env_problem(stem) and not entry.endswith("*"):
            raise Misconfigured(f"{ENV_ENGINE_ENV} entry {entry!r} loads code: it cannot be "
                                "allowed")
    return names


def _at(data: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split(".") if dotted else []:
        if not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def _settings(cfg: CampaignConfig, field: str) -> Iterator[tuple[str, Any]]:
    """(field path, value) of every place the campaign as written sets ``field`` (or a part
    of it, e.g. the axis ``vllm.env.NAME``), whatever the grid axis that holds it."""
    for where, fragment in [("base", cfg.base)] + [
            (f"experiments[{i}]", e) for i, e in enumerate(cfg.experiments)]:
        found, value = _at(fragment, field)
        if found:
            yield f"{where}.{field}", value
    for axis, values in cfg.grid.items():
        for i, value in enumerate(values):
            if axis == field:
                yield f"grid.{axis}[{i}]", value
            elif axis.startswith(field + "."):  # one key of a mapping: vllm.env.NAME
                yield f"grid.{axis}[{i}]", {axis[len(field) + 1:]: value}
            elif field.startswith(axis + "."):
                found, inner = _at(value, field[len(axis) + 1:])
                if found:
                    yield f"grid.{axis}[{i}].{field[len(axis) + 1:]}", inner


def engine_policy_errors(cfg: CampaignConfig) -> list[FieldError]:
    """vLLM flags and engine variables the campaign sets that the allow-lists refuse."""
    errors: list[FieldError] = []
    try:
        flags: list[str] | Misconfigured = allowed_vllm_flags()
    except Misconfigured as exc:
        flags = exc
    for path, args in _settings(cfg, "vllm.extra_args"):
        if not isinstance(args, list) or not args:
            continue
        problem = (refused(flags) if isinstance(flags, Misconfigured) else
                   vllm_args_problem([str(a) for a in args], flags, ENV_VLLM_FLAGS))
        if problem:
            errors.append(FieldError(path, problem))
    try:
        names: list[str] | Misconfigured = allowed_engine_env()
    except Misconfigured as exc:
        names = exc
    env_fields = [f"{e.section}.{e.env_field}" for e in engines().values()
                  if e.section is not None and e.env_field is not None]
    for field in env_fields:
        for path, env in _settings(cfg, field):
            if not isinstance(env, dict):
                continue
            for name in env:
                problem = (f"{name}: {refused(names)}" if isinstance(names, Misconfigured)
                           else engine_env_problem(str(name), names, ENV_ENGINE_ENV))
                if problem:
                    errors.append(FieldError(path, problem))
    return errors
