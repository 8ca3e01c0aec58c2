"""The DAG factory: a validated campaign becomes one Airflow DAG.

Shape (fixed at parse time; the number of experiments is not)::

    plan -> cycle_1[gpu_ready >> experiment (mapped)] -> cycle_2[...] -> ... -> aggregate
         -> verify_complete, change_points

``aggregate`` updates the campaign's Asset (``llem://results/<campaign>``) with the run's
summary; ``change_points`` searches the campaign's history and notifies on new change
points (``llem_airflow.alerts``).

``plan`` calls :func:`llem_core.campaign.planning.plan_run` and pushes the typed plan (key
``plan``) and each cycle's planned runs (key ``cycle_<k>``); cycle k's sensor validates
and returns them and the experiment task is mapped over that list, so a cycle beyond
the run's ``cycles`` param maps over nothing and is skipped, never failed. Parsing reads
the campaign files and their cached grid summaries only: no torch, transformers or
NVML, and no cost that grows with the grid.

:func:`build_dags` builds every campaign in isolation and returns the errors of the
ones that failed (whatever the exception); :func:`register_dags` puts the DAGs into a
DAG file's namespace and ``dags/llem_campaign_errors.py`` raises the errors.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, task

from llem_airflow.alerts import campaign_asset, deadline_args
from llem_airflow.docker_settings import docker_args, docker_settings
from llem_airflow.grid_cache import GridSummary, grid_summary
from llem_core.campaign.alerts import AlertSettings
from llem_core.campaign.config import (
    DAG_ID_PREFIX,
    MAX_SEED,
    CampaignConfig,
    DockerRunner,
    Execution,
    LocalRunner,
    Ordering,
)
from llem_core.campaign.discovery import Campaign, campaigns_dir, iter_campaigns
from llem_core.campaign.loading import CampaignFileError
from llem_core.campaign.planning import defaults
from llem_core.campaign.schedule import NOT_CRON
from llem_core.campaign.text_rules import shown

ENUM_LIMIT = 500  # beyond this many configurations the trigger form takes free names
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_CAMPAIGNS = Path(__file__).resolve().parents[2] / "campaigns"


def build_params(cfg: CampaignConfig, names: list[str], when: str) -> dict[str, Param]:
    """The trigger form. Airflow 3's form shows a Param's ``description`` as plain text and,
    only when that is None, its schema's ``description_md`` as Markdown: every help text
    here is Markdown. It marks a field required when the schema's ``type`` does not allow
    null, so the fields a run may leave empty allow it (the plan task still checks every
    value strictly: ``llem_core.campaign.planning.check_params``)."""
    ex = cfg.execution
    d = defaults(cfg)
    # the form is where a user triggering by hand sees when the campaign runs by itself
    scheduled = f" Scheduled {when}." if cfg.schedule else ""
    limit = ex.cycle_limit
    top = next(m.le for m in Execution.model_fields["max_cycles"].metadata
               if getattr(m, "le", None) is not None)
    if limit >= top:
        more = f" {top} is the most a campaign file allows."
    else:
        now = ("it is unset, so the most is `execution.cycles`" if ex.max_cycles is None
               else f"it is {ex.max_cycles}")
        more = (f" To allow more, raise `execution.max_cycles` in the campaign file ({now}; "
                f"up to {top}).")
    configs_schema: dict[str, Any] = {"type": "string"}
    if len(names) <= ENUM_LIMIT:
        configs_schema["enum"] = names
    return {
        "cycles": Param(
            d["cycles"], type="integer", minimum=1, maximum=limit, title="Cycles",
            description_md=f"Times every configuration runs, 1 to {limit}. No more than "
            f"{limit}: the DAG has one task group per cycle, made when Airflow parses the "
            f"campaign file, so a run cannot add cycles.{more}{scheduled}"),
        "ordering": Param(d["ordering"], type="string", enum=[o.value for o in Ordering],
                          title="Ordering", description_md="`interleaved` (every cycle runs "
                          "all configurations in one order), `shuffled` (a seeded order per "
                          "cycle) or `grouped` (all cycles of one configuration, then the "
                          "next)."),
        "seed": Param(d["seed"], type="integer", minimum=0, maximum=MAX_SEED, title="Seed",
                      description_md=f"Seed of the shuffled ordering, 0 to {MAX_SEED}."),
        # the multi-select sends null once emptied: null is "all", as an empty list is
        "configs": Param(d["configs"], type=["null", "array"], items=configs_schema,
                         uniqueItems=True, examples=names[:ENUM_LIMIT], title="Configurations",
                         description_md="Run only these configurations. Optional: empty "
                         "runs all of them."),
        # a switch is never empty; null (from a REST trigger) fails the plan task
        "dry_run": Param(d["dry_run"], type=["null", "boolean"], title="Dry run",
                         description_md="Optional. On: plan only (the plan and `plan.json`), "
                         "no experiment runs."),
        "max_output_tokens": Param(d["max_output_tokens"], type=["null", "integer"], minimum=1,
                                   maximum=131_072, title="Override max_output_tokens",
                                   description_md="Optional. Empty: as configured."),
        "warmup_runs": Param(d["warmup_runs"], type=["null", "integer"], minimum=0, maximum=100,
                             title="Override warmup_runs",
                             description_md="Optional. Empty: as configured."),
    }


def _md(text: Any) -> str:
    """Campaign text shown as Markdown: escaped, and no table cell breaks."""
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


def _plain(markdown: str) -> str:
    """:func:`schedule_text` as plain text, for the DAG list's description tooltip."""
    return html.unescape(markdown.replace("`", "").replace("\\|", "|"))


def schedule_text(cfg: CampaignConfig, now: datetime | None = None) -> str:
    """The schedule as users read it: cron, zone, window and the next run (Markdown)."""
    if not cfg.schedule:
        return "manual"
    w = cfg.schedule_window
    if w is None:
        return f"`{_md(cfg.schedule)}` (UTC)"
    from llem_core.campaign.schedule import fire_times

    nxt = fire_times(cfg.schedule, w, after=now or datetime.now(UTC))
    start, end = w.start_at(), w.end_at()
    return (f"`{_md(cfg.schedule)}` in {_md(w.timezone)}, from "
            f"{start.isoformat() if start else 'now'} until "
            f"{end.isoformat() if end else 'stopped'}; next run: "
            f"{nxt[0].isoformat() if nxt else 'none (the window is over)'}")


def doc_md(cfg: CampaignConfig, summary: GridSummary, source: Path, when: str) -> str:
    ex = cfg.execution
    runner = cfg.runner
    where = f"docker image `{_md(runner.image)}`" if isinstance(runner, DockerRunner) \
        else "local subprocess"
    p = summary.placement
    gpus = f"host GPUs {p.host_gpus}" if p.host_gpus else "CPU"
    lines = [f"### LLM energy campaign `{_md(cfg.campaign)}`", "", _md(cfg.description), "",
             f"- file: `{_md(source)}`",
             f"- configurations: {len(summary.names)} valid of {summary.generated} "
             f"generated ({summary.filtered} filtered)",
             f"- cycles: {ex.cycles} (up to {ex.cycle_limit}), ordering: {ex.ordering}, "
             f"seed {ex.seed}",
             f"- schedule: {when}",
             f"- runner: {where} on {_md(p.host)} (queue `{_md(p.queue)}`), {gpus}, "
             f"pool `{_md(p.pool)}`",
             f"- results: `{_md(cfg.results_dir)}`", ""]
    lines += [f"- warning: {_md(w)}" for w in summary.warnings]
    shown = summary.names[:50]
    lines += ["", "| configuration |", "|---|"] + [f"| {_md(n)} |" for n in shown]
    if len(summary.names) > len(shown):
        lines.append(f"| ... and {len(summary.names) - len(shown)} more |")
    return "\n".join(lines)


def plan_task(cfg: CampaignConfig, context: dict[str, Any]) -> dict[str, Any]:
    """The plan task's body: plan the run, write plan.json, return the XCom outputs."""
    from llem_core.analysis.results import write_atomic
    from llem_core.campaign.planning import PlanError, plan_run

    params = dict(context["params"])
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    params.update({k: v for k, v in conf.items() if k not in params})
    try:
        plan = plan_run(cfg, params, context["run_id"])
    except PlanError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from None
    import json

    write_atomic(Path(plan.run_dir) / "plan.json", json.dumps(plan.listing(), indent=2))
    out: dict[str, Any] = {f"cycle_{k}": [r.model_dump(mode="json") for r in plan.stage(k)]
                           for k in range(1, cfg.execution.cycle_limit + 1)}
    out["plan"] = plan.model_dump(mode="json")
    return out


def _experiment_operator(cfg: CampaignConfig, summary: GridSummary, runs: Any) -> Any:
    from llem_airflow.operators import MAP_INDEX_TEMPLATE

    ex = cfg.execution
    common: dict[str, Any] = {
        "task_id": "experiment",
        "pool": summary.placement.pool,
        "queue": summary.placement.queue,
        "retries": ex.retries,
        "retry_delay": timedelta(seconds=30),
        "config_gap_s": ex.config_gap_s,
        "map_index_template": MAP_INDEX_TEMPLATE,
        "max_active_tis_per_dagrun": 1,
    }
    # every experiment has a timeout (default 6 h): a load or wait that never ends is killed
    common["execution_timeout"] = timedelta(seconds=ex.experiment_timeout_s)
    runner = cfg.runner
    if ex.isolation != "container":
        from llem_airflow.hosted import LlemHostedOperator

        return LlemHostedOperator.partial(**host_args(cfg, summary), **common).expand(run=runs)
    if isinstance(runner, LocalRunner):
        from llem_airflow.operators import LlemLocalOperator

        return LlemLocalOperator.partial(python=runner.python, **common).expand(run=runs)
    from llem_airflow.docker_operator import LlemDockerOperator

    return LlemDockerOperator.partial(results_dir=cfg.results_dir, **docker_args(runner),
                                      **common).expand(run=runs)


def host_args(cfg: CampaignConfig, summary: GridSummary) -> dict[str, Any]:
    """What the host tasks and hosted experiments need to find, start and stop the host."""
    from llem_core.campaign.paths import local_model_paths, prompt_sources

    runner = cfg.runner
    inputs = sorted({str(Path(p).expanduser()) for _, p in local_model_paths(cfg)}
                    | {str(src[0]) for _, src in prompt_sources(cfg)})
    return {"mode": cfg.execution.isolation,
            "runner_kind": "local" if isinstance(runner, LocalRunner) else "docker",
            "python": runner.python if isinstance(runner, LocalRunner) else None,
            "docker": docker_settings(runner) if isinstance(runner, DockerRunner) else None,
            "results_dir": cfg.results_dir, "inputs": inputs,
            "host_name": summary.placement.host, "host_gpus": summary.placement.host_gpus}


def _host_tasks(cfg: CampaignConfig, summary: GridSummary) -> tuple[Any, Any]:
    """The run's experiment host: started before cycle 1, stopped after the last cycle
    whatever happened (an Airflow teardown; clearing a task clears them too)."""
    from llem_airflow.hosted import LlemHostOperator

    common = {**host_args(cfg, summary), "queue": summary.placement.queue}
    start = LlemHostOperator(task_id="host_start", action="start", **common)
    stop = LlemHostOperator(task_id="host_stop", action="stop", **common)
    return start, stop


def _cycle_group(cfg: CampaignConfig, summary: GridSummary, k: int,
                 host_start: Any = None) -> TaskGroup:
    from llem_airflow.sensors import GpuReadySensor

    with TaskGroup(group_id=f"cycle_{k}", tooltip=f"cycle {k}") as group:
        # The sensor returns the cycle's runs; the experiments are mapped over them.
        ready = GpuReadySensor(
            task_id="gpu_ready", cycle=k, host_gpus=summary.placement.host_gpus,
            health=cfg.health, gap_s=cfg.execution.cycle_gap_s if k > 1 else 0.0,
            # a later cycle runs after a failed experiment of the one before; cycle 1
            # follows the plan
            trigger_rule="all_done" if k > 1 else "all_success",
            warm_host=summary.placement.host if cfg.execution.isolation == "warm" and k > 1
            else None,
            # it reads the GPUs of the server the experiments run on
            queue=summary.placement.queue)
        experiments = _experiment_operator(cfg, summary, ready.output)
        if host_start is not None:
            # only the experiments need the host: its start-up (imports, seconds) overlaps
            # the plan and the first readiness check, which never touch the host
            host_start >> experiments
    return group


def schedule_args(cfg: CampaignConfig) -> dict[str, Any]:
    """The DAG's schedule, start, end and catchup from the campaign's schedule window."""
    window = cfg.schedule_window
    if cfg.schedule is None or cfg.schedule in NOT_CRON:  # no window allowed with these
        return {"schedule": cfg.schedule, "start_date": START_DATE, "catchup": False}
    from llem_airflow.timetable import ZonedCronTimetable

    # The timetable Airflow makes of a cron string or preset (create_cron_data_intervals is
    # off by default), in the window's zone or UTC: the same runs, and the DAG list shows
    # the zone beside the expression.
    if window is None:
        return {"schedule": ZonedCronTimetable(cfg.schedule, timezone="UTC"),
                "start_date": START_DATE, "catchup": False}
    return {"schedule": ZonedCronTimetable(cfg.schedule, timezone=window.timezone),
            "start_date": window.start_at() or START_DATE, "end_date": window.end_at(),
            "catchup": window.catchup}


def build_dag(campaign: Campaign, summary: GridSummary | None = None) -> DAG:
    cfg = campaign.loaded.config
    summary = summary or grid_summary(campaign)
    when = schedule_text(cfg)
    with DAG(
        dag_id=cfg.dag_id, **schedule_args(cfg), max_active_runs=1,
        tags=["llem", "energy", f"campaign:{cfg.campaign}"],
        doc_md=doc_md(cfg, summary, campaign.path, when),
        params=build_params(cfg, summary.names, when),
        description=(cfg.description or f"LLM energy campaign {cfg.campaign}")[:150]
        + (f" [{_plain(when)}]"[:200] if cfg.schedule_window else ""),
        default_args={"owner": "llem"},
        **deadline_args(cfg.campaign, cfg.alerts),
        # register_dags puts the DAG into llem_campaigns.py's namespace; auto-registration
        # would also give every DAG to llem_campaign_errors.py (which builds them only to
        # find errors), so a DAG's file, and what its tasks re-parse, would flip between
        # the two
        auto_register=False,
    ) as dag:

        @task(task_id="plan", multiple_outputs=True)
        def plan(**context: Any) -> dict[str, Any]:
            return plan_task(cfg, context)

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
        host = _host_tasks(cfg, summary) if cfg.execution.isolation != "container" else None
        for k in range(1, cfg.execution.cycle_limit + 1):
            group = _cycle_group(cfg, summary, k, host[0] if host and k == 1 else None)
            previous >> group
            previous = group
        if host is not None:
            previous >> host[1].as_teardown(setups=host[0])
        from llem_airflow.aggregate_task import LlemAggregateOperator
        from llem_airflow.change_task import LlemChangePointOperator

        digest = LlemAggregateOperator(task_id="aggregate",
                                       cycle_limit=cfg.execution.cycle_limit,
                                       group_by=cfg.group_by or None,
                                       outlets=[campaign_asset(cfg.campaign)])
        previous >> digest
        verify_complete(digest.output)
        alerts = cfg.alerts or AlertSettings()
        digest >> LlemChangePointOperator(
            task_id="change_points", campaign=cfg.campaign, metrics=alerts.metrics,
            alerts=cfg.alerts.model_dump(mode="json") if cfg.alerts else None)
    return dag


def build_dags(folder: Path, only: str | None = None) -> tuple[dict[str, DAG], list[str]]:
    """Every campaign of ``folder`` as a DAG, each built in isolation.

    Returns the DAGs by id and one ``file: field: reason`` line per problem: a file that
    fails for any reason loses only itself. ``only`` (a DAG id) builds just that DAG, as a
    worker running one task needs.
    """
    name = None
    if only is not None:
        if not only.startswith(DAG_ID_PREFIX):
            return {}, []  # not a campaign's DAG
        name = only.removeprefix(DAG_ID_PREFIX)
    campaigns, file_errors = iter_campaigns(folder, only=name)
    errors = [line for exc in file_errors for line in exc.lines()]
    dags: dict[str, DAG] = {}
    for campaign in campaigns:
        try:
            dags[campaign.loaded.config.dag_id] = build_dag(campaign)
        except CampaignFileError as exc:
            errors.extend(exc.lines())
        except Exception as exc:  # any failure of one campaign must not hide the others
            reason = str(exc).splitlines()[0][:500] if str(exc) else ""
            errors.append(shown(f"{campaign.path}: (DAG): {type(exc).__name__}: {reason}"))
    return dags, errors


def register_dags(namespace: dict[str, Any], folder: Path | None = None) -> list[str]:
    """Build the campaigns' DAGs into a DAG file's namespace; returns their ids."""
    from airflow.sdk import get_parsing_context

    dags, _ = build_dags(folder or campaigns_dir(DEFAULT_CAMPAIGNS),
                         only=get_parsing_context().dag_id)
    namespace.update(dags)
    return list(dags)


def campaign_errors(folder: Path | None = None) -> list[str]:
    """`file: field.path: reason` for every campaign that cannot become a DAG."""
    return build_dags(folder or campaigns_dir(DEFAULT_CAMPAIGNS))[1]
