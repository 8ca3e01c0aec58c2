"""A campaign run planned once, as typed data: what every Airflow task hands on.

``plan_run(campaign, params, run_id)`` expands the grid for the run's params, orders
the runs, resolves their placement and result paths, and returns a :class:`RunPlan`.
The DAG factory only renders a plan into tasks; every hand-off between tasks (XCom) is
one of these models dumped to JSON and validated again where it is read, so a field
renamed on one side fails loudly on the other instead of being read as ``None``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from llem_core.analysis.results import RunSpec, result_path, run_dir
from llem_core.campaign import ordering
from llem_core.campaign.config import (
    MAX_SEED,
    CampaignConfig,
    ExperimentConfig,
    HealthCheck,
    Ordering,
)
from llem_core.campaign.grid import (
    ExperimentSpec,
    GridReport,
    config_hash,
    conflicts,
    expand_or_raise,
    load_and_expand,
)
from llem_core.campaign.loading import (
    CampaignFileError,
    FieldError,
    LoadedCampaign,
    pydantic_errors,
)
from llem_core.campaign.placement import Placement, PlacementError, campaign_placement
from llem_core.runtime.engines.rules import timeout_conflicts

PLAN_SCHEMA_VERSION = 1
# The trigger form's fields; anything else in a run's conf is refused by name.
PARAM_KEYS = ("cycles", "ordering", "seed", "configs", "dry_run", "max_output_tokens",
              "warmup_runs")
OVERRIDABLE = ("max_output_tokens", "warmup_runs")


class PlanError(ValueError):
    """Params that cannot be planned; the message names the param and the reason."""


class PlannedRun(BaseModel):
    """One experiment of a campaign run: its spec, where it runs, where its result goes."""

    schema_version: int = PLAN_SCHEMA_VERSION
    name: str
    config_hash: str
    cycle: int = Field(ge=1)
    position: int = Field(ge=0)
    stage: int = Field(ge=1, description="The cycle task group the run executes in.")
    result_path: str
    spec: RunSpec
    placement: Placement


class RunPlan(BaseModel):
    """Every planned run of one DAG run, in execution order."""

    schema_version: int = PLAN_SCHEMA_VERSION
    campaign: str
    run_id: str
    run_dir: str
    cycles: int
    ordering: Ordering
    seed: int
    dry_run: bool = False
    compare_to: str | None = Field(None, description="Reference configuration of comparisons.")
    configurations: int
    placement: Placement
    runs: list[PlannedRun]

    def stage(self, k: int) -> list[PlannedRun]:
        """The runs of cycle task group ``k`` (none in a dry run)."""
        return [] if self.dry_run else [r for r in self.runs if r.stage == k]

    def listing(self) -> dict[str, Any]:
        """The plan without specs: what plan.json and the results page show."""
        return {"schema_version": self.schema_version, "campaign": self.campaign,
                "run_id": self.run_id, "cycles": self.cycles, "ordering": str(self.ordering),
                "seed": self.seed, "dry_run": self.dry_run, "compare_to": self.compare_to,
                "runs": [{"name": r.name, "config_hash": r.config_hash, "cycle": r.cycle,
                          "position": r.position, "result_path": r.result_path}
                         for r in self.runs]}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _integer(name: str, value: Any, low: int, high: int, optional: bool = False) -> None:
    """An int within [low, high]: never a bool, a float or a numeric string (no coercion)."""
    if value is None and optional:
        return
    if type(value) is not int or not low <= value <= high:
        kind = "null or an integer" if optional else "an integer"
        raise PlanError(f"params.{name}: must be {kind} from {low} to {high}, got "
                        f"{_shown(value)} ({type(value).__name__})")


def check_params(params: dict[str, Any], cycle_limit: int) -> None:
    """Refuse, as one line ``params.<name>: reason``, what a run's params may hold that the
    trigger form would not let through: a run triggered through the REST API, or with a
    conf, skips the form's JSON-schema check, so every param is checked here, strictly
    (``"7"`` is not 7 and ``"false"`` is not false)."""
    unknown = sorted(str(k) for k in set(params) - set(PARAM_KEYS))
    if unknown:
        raise PlanError(f"params: unknown trigger param(s) {unknown}; known: "
                        f"{list(PARAM_KEYS)}")
    _integer("cycles", params.get("cycles"), 1, cycle_limit)
    ordering_ = params.get("ordering")
    known = [o.value for o in Ordering]
    if not isinstance(ordering_, str) or ordering_ not in known:
        raise PlanError(f"params.ordering: must be one of {', '.join(known)}, got "
                        f"{_shown(ordering_)}")
    _integer("seed", params.get("seed"), 0, MAX_SEED)
    if type(params.get("dry_run")) is not bool:
        raise PlanError(f"params.dry_run: must be true or false, got "
                        f"{_shown(params.get('dry_run'))} ({type(params.get('dry_run')).__name__})")
    configs = params.get("configs")
    if configs is None:
        configs = []
    if not isinstance(configs, list) or not all(isinstance(c, str) for c in configs):
        raise PlanError(f"params.configs: must be a list of configuration names, got "
                        f"{_shown(configs)}")
    # counted once each: a REST conf may list many thousands (list.count per item is
    # quadratic: minutes of a worker's CPU)
    repeated = sorted(c for c, n in Counter(configs).items() if n > 1)
    if repeated:
        raise PlanError(f"params.configs: {_shown(repeated)} listed more than once (each "
                        "configuration runs once per cycle)")
    for name in OVERRIDABLE:
        info = ExperimentConfig.model_fields[name]
        low = next(m.ge for m in info.metadata if getattr(m, "ge", None) is not None)
        high = next(m.le for m in info.metadata if getattr(m, "le", None) is not None)
        _integer(name, params.get(name), low, high, optional=True)


def _select(report: GridReport, wanted: list[str]) -> list[ExperimentSpec]:
    if not wanted:
        return report.specs
    by_name = report.by_name()
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise PlanError(f"params.configs: unknown configurations {_shown(unknown)}; "
                        f"valid: {_shown(list(by_name)[:20])}")
    return [by_name[n] for n in wanted]


def _override(specs: list[ExperimentSpec], params: dict[str, Any],
              timeout_s: float) -> list[ExperimentSpec]:
    overrides = {k: params[k] for k in OVERRIDABLE if params.get(k) is not None}
    if not overrides:
        return specs
    given = ", ".join(f"params.{k}={v}" for k, v in overrides.items())
    changed = []
    for s in specs:
        try:
            cfg = type(s.config).model_validate({**s.config.model_dump(), **overrides})
        except ValidationError as exc:
            first = pydantic_errors(exc, ExperimentConfig)[0]
            raise PlanError(f"params: {given} makes {s.name!r} invalid: {first.path}: "
                            f"{first.reason}") from None
        problems = conflicts(cfg) + timeout_conflicts(cfg, timeout_s)
        if problems:
            raise PlanError(f"params: {given} makes {s.name!r} invalid: {problems[0]}")
        changed.append(s.model_copy(update={"config": cfg, "config_hash": config_hash(cfg)}))
    return changed


def defaults(campaign: CampaignConfig) -> dict[str, Any]:
    """The params of a run triggered with an empty form (a scheduled run)."""
    ex = campaign.execution
    return {"cycles": ex.cycles, "ordering": str(ex.ordering), "seed": ex.seed, "configs": [],
            "dry_run": False, "max_output_tokens": None, "warmup_runs": None}


def plan_run(campaign: CampaignConfig, params: dict[str, Any] | None, run_id: str,
             report: GridReport | None = None) -> RunPlan:
    """Plan one run of a campaign for the given trigger params."""
    params = {**defaults(campaign), **(params or {})}
    check_params(params, campaign.execution.cycle_limit)
    report = report or expand_or_raise(campaign)
    specs = _override(_select(report, list(params.get("configs") or [])), params,
                      campaign.execution.experiment_timeout_s)
    placement = campaign_placement(campaign.runner, [(s.name, s.config) for s in specs])
    runs = ordering.build(specs, int(params["cycles"]), params["ordering"], int(params["seed"]))
    health = campaign.health
    every_n = health.every_n_experiments if health.between == "experiments" else 0
    planned = []
    for stage_no, stage in enumerate(ordering.stages(runs, len(specs)), start=1):
        for r in stage:
            check = every_n and r.position > 0 and r.position % every_n == 0
            spec = RunSpec(campaign=campaign.campaign, run_id=run_id, name=r.spec.name,
                           config_hash=r.spec.config_hash, cycle=r.cycle, position=r.position,
                           config=r.spec.config,
                           health_check=HealthCheck.from_health(health) if check else None,
                           isolation=campaign.execution.isolation)
            path = result_path(campaign.results_dir, campaign.campaign, run_id,
                               r.spec.config_hash, r.cycle)
            planned.append(PlannedRun(name=r.spec.name, config_hash=r.spec.config_hash,
                                      cycle=r.cycle, position=r.position, stage=stage_no,
                                      result_path=str(path), spec=spec, placement=placement))
    return RunPlan(campaign=campaign.campaign, run_id=run_id,
                   run_dir=str(run_dir(campaign.results_dir, campaign.campaign, run_id)),
                   cycles=int(params["cycles"]), ordering=params["ordering"],
                   seed=int(params["seed"]), dry_run=bool(params.get("dry_run")),
                   compare_to=campaign.compare_to,
                   configurations=len(specs), placement=placement, runs=planned)


def load_and_place(path: str | Path) -> tuple[LoadedCampaign, GridReport]:
    """Load, expand and place a campaign file: every check that building its DAG makes.

    ``llem validate`` and the DAG factory both go through here, so a file validate
    accepts is a file Airflow loads.
    """
    loaded, report = load_and_expand(path)
    try:
        campaign_placement(loaded.config.runner, [(s.name, s.config) for s in report.specs])
    except PlacementError as exc:
        raise CampaignFileError(str(path), [FieldError("runner.gpus", str(exc))]) from None
    return loaded, report
