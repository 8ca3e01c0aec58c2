"""Expand a campaign into experiment specs: Cartesian grid + explicit experiments.

Every combination is built and validated; combinations whose values conflict are
filtered with their reasons (never raised one by one), soft problems become warnings,
duplicates (same config hash) are kept once and reported.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from llem_core.campaign.config import CampaignConfig, ExperimentConfig
from llem_core.campaign.grid_limits import (
    GridLimitMisconfigured,
    combination_count,
    expansion_work,
    max_expansion_work,
    max_grid_size,
)
from llem_core.campaign.loading import (
    CampaignFileError,
    FieldError,
    LoadedCampaign,
    deep_merge,
    flatten,
    load_campaign,
    pydantic_errors,
    set_path,
)
from llem_core.runtime.engines import engine_for
from llem_core.runtime.engines.rules import engine_conflicts, timeout_conflicts

# Airflow's [core] max_map_length default: a mapped task with more entries fails.
AIRFLOW_MAX_MAP_LENGTH = 1024


class ExperimentSpec(BaseModel):
    """A valid configuration with its identity."""

    name: str
    config_hash: str
    config: ExperimentConfig
    point: dict[str, Any] = Field(default_factory=dict, description="Values that define it.")
    source: str = "grid"


class FilteredPoint(BaseModel):
    name: str
    point: dict[str, Any]
    source: str
    reasons: list[str]


class Duplicate(BaseModel):
    name: str
    config_hash: str
    duplicate_of: str
    source: str


class GridReport(BaseModel):
    campaign: str
    generated: int
    specs: list[ExperimentSpec]
    filtered: list[FilteredPoint]
    duplicates: list[Duplicate]
    warnings: list[str]

    @property
    def valid(self) -> int:
        return len(self.specs)

    def by_name(self) -> dict[str, ExperimentSpec]:
        return {s.name: s for s in self.specs}


class NoValidConfigError(ValueError):
    """Every combination of the campaign was filtered."""

    field = "grid"  # the campaign field a file error names


class UnknownReferenceError(NoValidConfigError):
    """``compare_to`` names no valid configuration of the campaign."""

    field = "compare_to"


class GridTooLargeError(NoValidConfigError):
    """More combinations than max_grid_size(): refused before expanding (a subclass of
    NoValidConfigError so that every caller turning that into a file error does so too)."""


def config_hash(cfg: ExperimentConfig) -> str:
    """sha256 of the canonical JSON of the config (its name excluded), first 12 hex digits."""
    payload = cfg.model_dump(mode="json", exclude={"name"})
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def conflicts(cfg: ExperimentConfig) -> list[str]:
    """Reasons a configuration cannot run, though each of its fields is valid."""
    out = []
    if cfg.min_output_tokens > cfg.max_output_tokens:
        out.append(f"min_output_tokens ({cfg.min_output_tokens}) > max_output_tokens "
                   f"({cfg.max_output_tokens})")
    engine = engine_for(cfg.backend)
    if cfg.dtype not in engine.dtypes:
        out.append(f"backend {cfg.backend} cannot run dtype {cfg.dtype}")
    if cfg.prompts.kind == "builtin" and cfg.prompts.count < cfg.batch_size:
        out.append(f"batch_size ({cfg.batch_size}) exceeds the {cfg.prompts.count} prompts: "
                   "the batch would never fill")
    if cfg.prompts.kind == "jsonl" and cfg.prompts.limit is not None \
            and cfg.prompts.limit < cfg.batch_size:
        out.append(f"batch_size ({cfg.batch_size}) exceeds prompts.limit ({cfg.prompts.limit})")
    if cfg.energy.meter == "nvml" and cfg.device == "cpu":
        out.append("energy.meter nvml measures GPUs but device is cpu")
    if cfg.energy.meter == "nvml" and not cfg.gpus:
        out.append("energy.meter nvml needs at least one GPU in gpus")
    if cfg.device == "cuda" and not cfg.gpus:
        out.append("device cuda needs at least one GPU in gpus")
    out += engine_conflicts(cfg)
    return out


def soft_warnings(cfg: ExperimentConfig) -> list[str]:
    """Problems that do not stop a configuration but that its user should know."""
    out = []
    engine = engine_for(cfg.backend)
    if not cfg.decoding.sampling and (cfg.decoding.top_k or cfg.decoding.top_p):
        out.append("top_k/top_p are ignored with temperature 0 (greedy decoding)")
    if cfg.prompts.kind == "builtin":
        # only in-process engines truncate; served engines refuse such prompts
        if not engine.served and cfg.prompts.length > cfg.max_input_tokens:
            out.append(f"prompts of {cfg.prompts.length} tokens are truncated to "
                       f"max_input_tokens={cfg.max_input_tokens}")
        if cfg.prompts.count % cfg.batch_size:
            out.append(f"{cfg.prompts.count} prompts do not divide into batches of "
                       f"{cfg.batch_size}: the last batch is partial")
    out += engine.warnings(cfg)
    fixed_by_server = cfg.load is not None and cfg.load.fixed_output
    if cfg.min_output_tokens < cfg.max_output_tokens and not fixed_by_server:
        out.append("output length varies with EOS (min_output_tokens < max_output_tokens): "
                   "J/token is comparable, J/request is not")
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value.rsplit("/", 1)[-1] if "/" in value else value
    if isinstance(value, float) and value.is_integer():
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True) \
        if isinstance(value, dict | list) else str(value)


def derived_name(point: dict[str, Any]) -> str:
    items = [(k, v) for k, v in point.items() if k != "name"]
    return ",".join(f"{k}={_fmt(v)}" for k, v in items) or "base"


def _candidates(campaign: CampaignConfig):
    """Yield (point, merged config dict, source) for every grid point and explicit experiment."""
    axes = list(campaign.grid.items())
    if axes or not campaign.experiments:
        for values in itertools.product(*(v for _, v in axes)):
            point = dict(zip((a for a, _ in axes), values, strict=True))
            data = dict(campaign.base)
            for path, value in point.items():
                data = set_path(data, path, value)
            yield point, data, "grid"
    for i, override in enumerate(campaign.experiments):
        yield flatten(override), deep_merge(campaign.base, override), f"experiments[{i}]"


def expand(campaign: CampaignConfig) -> GridReport:
    """Build every combination; keep the valid ones, filter the rest with reasons.

    Raises GridTooLargeError, before building anything, past max_grid_size()."""
    size = combination_count(campaign.grid, campaign.experiments)
    try:
        limit = max_grid_size()
    except GridLimitMisconfigured as exc:
        raise GridTooLargeError(str(exc)) from None
    if size > limit:
        raise GridTooLargeError(
            f"campaign {campaign.campaign!r}: {size} combinations exceed the limit of {limit}")
    work = expansion_work(campaign.base, campaign.grid, campaign.experiments)
    if work > max_expansion_work():
        raise GridTooLargeError(
            f"campaign {campaign.campaign!r}: {size} combinations hold {work} values in all, "
            f"more than {max_expansion_work()}")
    specs: list[ExperimentSpec] = []
    filtered: list[FilteredPoint] = []
    duplicates: list[Duplicate] = []
    warnings: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    generated = 0
    for point, data, source in _candidates(campaign):
        generated += 1
        name = data.get("name") if ("name" in point or source != "grid") and data.get("name") \
            else derived_name(point)
        try:
            cfg = ExperimentConfig.model_validate(data)
        except ValidationError as exc:
            reasons = [f"{e.path}: {e.reason}" for e in pydantic_errors(exc, ExperimentConfig)]
            filtered.append(FilteredPoint(name=name, point=point, source=source, reasons=reasons))
            continue
        problems = conflicts(cfg) + timeout_conflicts(
            cfg, campaign.execution.experiment_timeout_s)
        if problems:
            filtered.append(FilteredPoint(name=name, point=point, source=source, reasons=problems))
            continue
        h = config_hash(cfg)
        if h in seen:
            duplicates.append(Duplicate(name=name, config_hash=h, duplicate_of=seen[h],
                                        source=source))
            continue
        seen[h] = name
        for w in soft_warnings(cfg):
            warnings.setdefault(w, []).append(name)
        specs.append(ExperimentSpec(name=name, config_hash=h, config=cfg.model_copy(
            update={"name": name}), point=point, source=source))
    _uniquify_names(specs)
    notes = [f"{w} ({_names(n)})" for w, n in warnings.items()]
    if len(specs) > AIRFLOW_MAX_MAP_LENGTH:
        notes.append(
            f"{len(specs)} configurations per cycle exceed Airflow's default [core] "
            f"max_map_length of {AIRFLOW_MAX_MAP_LENGTH}: set AIRFLOW__CORE__MAX_MAP_LENGTH "
            "to at least that many or the cycle fails when it is mapped")
    return GridReport(campaign=campaign.campaign, generated=generated, specs=specs,
                      filtered=filtered, duplicates=duplicates, warnings=notes)


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _uniquify_names(specs: list[ExperimentSpec]) -> None:
    counts: dict[str, int] = {}
    for s in specs:
        counts[s.name] = counts.get(s.name, 0) + 1
    for s in specs:
        if counts[s.name] > 1:
            s.name = f"{s.name}#{s.config_hash[:6]}"
            s.config = s.config.model_copy(update={"name": s.name})


def expand_or_raise(campaign: CampaignConfig) -> GridReport:
    report = expand(campaign)
    if not report.specs:
        reasons = "; ".join(f"{f.name}: {', '.join(f.reasons)}" for f in report.filtered[:5])
        raise NoValidConfigError(
            f"campaign {campaign.campaign!r}: none of the {report.generated} configurations is "
            f"valid ({reasons})")
    ref = campaign.compare_to
    if ref is not None and not any(ref in (s.name, s.config_hash, f"{campaign.campaign}/{s.name}")
                                   for s in report.specs):
        names = ", ".join(s.name for s in report.specs[:10])
        raise UnknownReferenceError(
            f"{ref!r} is no valid configuration of this campaign (a name or config hash: "
            f"{names}{', ...' if len(report.specs) > 10 else ''}); no comparison would be made")
    return report


def load_and_expand(path: str | Path) -> tuple[LoadedCampaign, GridReport]:
    """Load a campaign file and expand it; a campaign with no valid combination is a file error."""
    loaded = load_campaign(path)
    try:
        return loaded, expand_or_raise(loaded.config)
    except NoValidConfigError as exc:
        raise CampaignFileError(str(path), [FieldError(exc.field, str(exc))]) from None

