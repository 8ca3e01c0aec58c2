"""A campaign run planned once, as typed data: what every Airflow task hands on.

``plan_run(campaign, params, run_id)`` expands the grid for the run's params, orders
the runs, resolves their placement and result paths, and returns a :class:`RunPlan`.
The DAG factory only renders a plan into tasks; every hand-off between tasks (XCom) is
one of these models dumped to JSON and validated again where it is read, so a field
renamed on one side fails loudly on the other instead of being read as ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from llem_core import plan as ordering
from llem_core.campaign_file import CampaignFileError, FieldError, LoadedCampaign
from llem_core.config import CampaignConfig, HealthCheck, Ordering
from llem_core.grid import (
    ExperimentSpec,
    GridReport,
    config_hash,
    conflicts,
    expand_or_raise,
    load_and_expand,
)
from llem_core.placement import Placement, PlacementError, campaign_placement
from llem_core.results import RunSpec, result_path, run_dir

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


def check_params(params: dict[str, Any], cycle_limit: int) -> None:
    """Refuse what the trigger form cannot: unknown keys and out-of-range cycles."""
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if unknown:
        raise PlanError(f"unknown trigger param(s) {unknown}; known: {list(PARAM_KEYS)}")
    cycles = params.get("cycles")
    if isinstance(cycles, bool) or not isinstance(cycles, int) or \
            not 1 <= cycles <= cycle_limit:
        raise PlanError(f"cycles: must be an integer from 1 to {cycle_limit}, got {cycles!r}")


def _select(report: GridReport, wanted: list[str]) -> list[ExperimentSpec]:
    if not wanted:
        return report.specs
    by_name = report.by_name()
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise PlanError(f"configs: unknown configurations {unknown}; "
                        f"valid: {list(by_name)[:20]}")
    return [by_name[n] for n in wanted]


def _override(specs: list[ExperimentSpec], params: dict[str, Any]) -> list[ExperimentSpec]:
    overrides = {k: params[k] for k in OVERRIDABLE if params.get(k) is not None}
    if not overrides:
        return specs
    changed = []
    for s in specs:
        cfg = type(s.config).model_validate({**s.config.model_dump(), **overrides})
        problems = conflicts(cfg)
        if problems:
            raise PlanError(f"override {overrides} makes {s.name} invalid: {problems}")
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
    specs = _override(_select(report, list(params.get("configs") or [])), params)
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
                           health_check=HealthCheck.from_health(health) if check else None)
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
