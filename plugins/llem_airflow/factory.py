"""The DAG factory: a validated campaign becomes one Airflow DAG.

Shape (fixed at parse time; the number of experiments is not)::

    plan -> cycle_1[gpu_ready >> experiment (mapped)] -> cycle_2[...] -> ... -> aggregate

``plan`` expands the grid for the run's params and pushes each cycle's runs under the key
``cycle_<k>``; cycle k's experiment task is mapped over that list, so a cycle beyond the
run's ``cycles`` param maps over nothing and is skipped, never failed. Parsing reads the
campaign file and its cached grid summary only: no torch, transformers or NVML, and no
cost that grows with the grid.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, task

from llem_airflow.grid_cache import grid_summary
from llem_airflow.pools import pool_for
from llem_core.campaign_file import LoadedCampaign
from llem_core.config import CampaignConfig, DockerRunner, LocalRunner, Ordering

CAMPAIGNS_ENV = "LLEM_CAMPAIGNS_DIR"
ENUM_LIMIT = 500  # beyond this many configurations the trigger form takes free names
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)


def campaigns_dir(dag_file: str | Path) -> Path:
    env = os.environ.get(CAMPAIGNS_ENV)
    return Path(env) if env else Path(dag_file).resolve().parent.parent / "campaigns"


def build_params(cfg: CampaignConfig, names: list[str]) -> dict[str, Param]:
    ex = cfg.execution
    configs_schema: dict[str, Any] = {"type": "string"}
    if len(names) <= ENUM_LIMIT:
        configs_schema["enum"] = names
    return {
        "cycles": Param(ex.cycles, type="integer", minimum=1, maximum=ex.cycle_limit,
                        title="Cycles", description=f"Times every configuration runs "
                        f"(1..{ex.cycle_limit})."),
        "ordering": Param(str(ex.ordering), type="string", enum=[o.value for o in Ordering],
                          title="Ordering", description="interleaved, shuffled or grouped."),
        "seed": Param(ex.seed, type="integer", minimum=0, title="Seed",
                      description="Seed of the shuffled ordering."),
        "configs": Param([], type="array", items=configs_schema, uniqueItems=True,
                         examples=names[:ENUM_LIMIT], title="Configurations",
                         description="Run only these configurations (empty: all)."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Plan only: no experiment runs."),
        "max_output_tokens": Param(None, type=["null", "integer"], minimum=1,
                                   maximum=131_072, title="Override max_output_tokens",
                                   description="Empty: as configured."),
        "warmup_runs": Param(None, type=["null", "integer"], minimum=0, maximum=100,
                             title="Override warmup_runs", description="Empty: as configured."),
    }


def doc_md(cfg: CampaignConfig, summary: dict[str, Any], source: Path) -> str:
    ex = cfg.execution
    runner = cfg.runner
    where = f"docker image `{runner.image}`" if isinstance(runner, DockerRunner) \
        else "local subprocess"
    lines = [f"### LLM energy campaign `{cfg.campaign}`", "", cfg.description or "", "",
             f"- file: `{source}`",
             f"- configurations: {len(summary['names'])} valid of {summary['generated']} "
             f"generated ({summary['filtered']} filtered)",
             f"- cycles: {ex.cycles} (up to {ex.cycle_limit}), ordering: {ex.ordering}, "
             f"seed {ex.seed}",
             f"- schedule: `{cfg.schedule}`" if cfg.schedule else "- schedule: manual",
             f"- runner: {where}", f"- results: `{cfg.results_dir}`", ""]
    lines += [f"- warning: {w}" for w in summary.get("warnings", [])]
    shown = summary["names"][:50]
    lines += ["", "| configuration |", "|---|"] + [f"| {n} |" for n in shown]
    if len(summary["names"]) > len(shown):
        lines.append(f"| ... and {len(summary['names']) - len(shown)} more |")
    return "\n".join(lines)


def _plan_runs(cfg: CampaignConfig, params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Expand the grid for this run's params and lay the runs out per cycle."""
    from llem_core import plan as planmod
    from llem_core.grid import config_hash, expand_or_raise
    from llem_core.results import RunSpec, result_path, run_dir

    report = expand_or_raise(cfg)
    specs = report.specs
    wanted = params.get("configs") or []
    if wanted:
        by_name = report.by_name()
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ValueError(f"unknown configurations {unknown}; valid: {list(by_name)[:20]}")
        specs = [by_name[n] for n in wanted]
    overrides = {k: params[k] for k in ("max_output_tokens", "warmup_runs")
                 if params.get(k) is not None}
    if overrides:
        from llem_core.grid import conflicts

        changed = []
        for s in specs:
            new_cfg = s.config.model_copy(update=overrides)
            new_cfg = type(new_cfg).model_validate(new_cfg.model_dump())
            problems = conflicts(new_cfg)
            if problems:
                raise ValueError(f"override {overrides} makes {s.name} invalid: {problems}")
            changed.append(s.model_copy(update={"config": new_cfg,
                                                "config_hash": config_hash(new_cfg)}))
        specs = changed
    cycles = int(params["cycles"])
    runs = planmod.build(specs, cycles, params["ordering"], int(params["seed"]))
    every_n = cfg.health.every_n_experiments if cfg.health.between == "experiments" else 0
    health_check = {"max_temperature_c": cfg.health.max_temperature_c,
                    "max_memory_used_pct": cfg.health.max_memory_used_pct,
                    "allow_foreign_processes": cfg.health.allow_foreign_processes,
                    "timeout_s": cfg.health.timeout_s}
    out: dict[str, Any] = {f"cycle_{k}": [] for k in range(1, cfg.execution.cycle_limit + 1)}
    listing = []
    for stage_no, stage in enumerate(planmod.stages(runs, len(specs)), start=1):
        for r in stage:
            spec = RunSpec(campaign=cfg.campaign, run_id=run_id, name=r.spec.name,
                           config_hash=r.spec.config_hash, cycle=r.cycle, position=r.position,
                           config=r.spec.config,
                           health_check=health_check if every_n and r.position % every_n == 0
                           and r.position > 0 else None)
            path = result_path(cfg.results_dir, cfg.campaign, run_id, r.spec.config_hash,
                               r.cycle)
            entry = {"name": r.spec.name, "config_hash": r.spec.config_hash, "cycle": r.cycle,
                     "position": r.position, "result_path": str(path)}
            listing.append(entry)
            if not params.get("dry_run"):
                out[f"cycle_{stage_no}"].append({**entry, "spec_json": spec.model_dump_json()})
    out["plan"] = listing
    out["run_dir"] = str(run_dir(cfg.results_dir, cfg.campaign, run_id))
    return out


def _experiment_operator(cfg: CampaignConfig, cycle: int, runs: Any, pool: str):
    from llem_airflow.operators import MAP_INDEX_TEMPLATE

    ex = cfg.execution
    common: dict[str, Any] = {
        "task_id": "experiment",
        "pool": pool,
        "retries": ex.retries,
        "retry_delay": timedelta(seconds=30),
        "config_gap_s": ex.config_gap_s,
        "map_index_template": MAP_INDEX_TEMPLATE,
        "max_active_tis_per_dagrun": 1,
    }
    if ex.experiment_timeout_s:
        common["execution_timeout"] = timedelta(seconds=ex.experiment_timeout_s)
    runner = cfg.runner
    if isinstance(runner, LocalRunner):
        from llem_airflow.operators import LlemLocalOperator

        return LlemLocalOperator.partial(python=runner.python, queue=runner.queue or "default",
                                         **common).expand(run=runs)
    from docker.types import DeviceRequest, Mount

    from llem_airflow.operators import LlemDockerOperator

    mounts = [Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
              for m in runner.mounts]
    env: dict[str, str] = {}
    if runner.model_cache:
        mounts.append(Mount(target="/models-cache", source=runner.model_cache, type="bind",
                            read_only=True))
        env.update(HF_HOME="/models-cache", HF_HUB_OFFLINE="1")
    devices = None
    if runner.gpus == "all":
        devices = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    elif runner.gpus:
        devices = [DeviceRequest(device_ids=[str(g) for g in runner.gpus],
                                 capabilities=[["gpu"]])]
    return LlemDockerOperator.partial(
        image=runner.image, docker_url=runner.docker_url, mounts=mounts, environment=env,
        device_requests=devices, shm_size=_bytes(runner.shm_size), results_dir=cfg.results_dir,
        user=f"{os.getuid()}:{os.getgid()}",
        queue=runner.queue or "default", **common).expand(run=runs)


def _bytes(size: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    s = size.strip().lower().removesuffix("b")
    return int(float(s[:-1]) * units[s[-1]]) if s and s[-1] in units else int(s)


def build_dag(loaded: LoadedCampaign, text: str) -> DAG:
    cfg = loaded.config
    summary = grid_summary(loaded, text)
    names = summary["names"]
    pool = pool_for(cfg)
    health = cfg.health
    thresholds = {"max_temperature_c": health.max_temperature_c,
                  "max_memory_used_pct": health.max_memory_used_pct,
                  "allow_foreign_processes": health.allow_foreign_processes}
    gpus = None if cfg.base.get("device") == "cpu" else cfg.base.get("gpus", [0])

    with DAG(
        dag_id=cfg.dag_id, schedule=cfg.schedule, start_date=START_DATE, catchup=False,
        max_active_runs=1, tags=["llem", "energy", f"campaign:{cfg.campaign}"],
        doc_md=doc_md(cfg, summary, loaded.path), params=build_params(cfg, names),
        description=(cfg.description or f"LLM energy campaign {cfg.campaign}")[:200],
        default_args={"owner": "llem"},
    ) as dag:

        @task(task_id="plan", multiple_outputs=True)
        def plan(**context: Any) -> dict[str, Any]:
            return _plan_runs(cfg, dict(context["params"]), context["run_id"])

        @task(task_id="verify_complete")
        def verify_complete(digest: dict[str, Any]) -> None:
            """Fail the run while any planned experiment lacks a result: a campaign that
            silently lost runs must not look successful. Clearing the failed experiment
            with its downstream re-runs aggregate and this check."""
            from airflow.sdk.exceptions import AirflowException

            missing = digest.get("missing") or []
            if missing:
                names = ", ".join(f"{m['name']} (cycle {m['cycle']})" for m in missing)
                raise AirflowException(f"{len(missing)} planned run(s) have no result: {names}")

        previous: Any = plan()
        for k in range(1, cfg.execution.cycle_limit + 1):
            from llem_airflow.sensors import GpuReadySensor

            with TaskGroup(group_id=f"cycle_{k}", tooltip=f"cycle {k}") as group:
                # The sensor returns the cycle's runs; the experiments are mapped over them.
                ready = GpuReadySensor(
                    task_id="gpu_ready", cycle=k, gpus=gpus, thresholds=thresholds,
                    ready_timeout_s=health.timeout_s,
                    gap_s=cfg.execution.cycle_gap_s if k > 1 else 0.0,
                    poke_interval=health.poke_interval_s, trigger_rule="all_done",
                    # it reads the GPU of the server the experiments run on
                    queue=cfg.runner.queue or "default")
                _experiment_operator(cfg, k, ready.output, pool)
            previous >> group
            previous = group
        from llem_airflow.operators import LlemAggregateOperator

        digest = LlemAggregateOperator(task_id="aggregate",
                                       cycle_limit=cfg.execution.cycle_limit,
                                       group_by=cfg.group_by or None)
        previous >> digest
        verify_complete(digest.output)
    return dag


def _campaign_name(text: str) -> str | None:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data.get("campaign") if isinstance(data, dict) else None


def build_all(dag_file: str, namespace: dict[str, Any]) -> list[str]:
    """Build every valid campaign's DAG into ``namespace``; invalid ones are skipped here
    and raised as an import error by dags/llem_campaign_errors.py."""
    from airflow.sdk import get_parsing_context

    from llem_core.campaign_file import CampaignFileError, validate_campaign_data

    wanted = get_parsing_context().dag_id  # a worker running one task needs one DAG
    built = []
    for path in sorted(campaigns_dir(dag_file).glob("*.y*ml")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if wanted is not None and f"llem_{_campaign_name(text)}" != wanted:
            continue
        try:
            import yaml

            cfg = validate_campaign_data(yaml.safe_load(text), str(path), path.parent.resolve())
            dag = build_dag(LoadedCampaign(path, cfg), text)
        except (CampaignFileError, yaml.YAMLError):
            continue
        if dag.dag_id in namespace:
            continue  # a second file with the same campaign name: reported as an error
        namespace[dag.dag_id] = dag
        built.append(dag.dag_id)
    return built


def campaign_errors(dag_file: str) -> list[str]:
    """`file: field.path: reason` for every campaign that cannot become a DAG."""
    from llem_core.campaign_file import CampaignFileError, load_campaign

    lines: list[str] = []
    owners: dict[str, Path] = {}
    for path in sorted(campaigns_dir(dag_file).glob("*.y*ml")):
        try:
            loaded = load_campaign(path)
            grid_summary(loaded, path.read_text(encoding="utf-8"))
        except CampaignFileError as exc:
            lines.extend(exc.lines())
            continue
        name = loaded.config.campaign
        if name in owners:
            lines.append(f"{path}: campaign: {name!r} is already used by {owners[name]}")
        owners.setdefault(name, path)
    return lines
