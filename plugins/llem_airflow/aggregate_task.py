"""The aggregate task: statistics, summary files and the HTML report of one DAG run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from llem_airflow.links import ReportLink
from llem_core.campaign.planning import RunPlan


def readiness_notes(ready: list[Any]) -> list[str]:
    """Sentences for the summary about cycles whose GPU check timed out or could not run."""
    infos = [r for r in ready if isinstance(r, dict)]
    notes = [f"cycle {r['cycle']}: GPU not ready after {r['waited_s']:.0f} s "
             f"({'; '.join(r['reasons'])}); ran anyway" for r in infos if r.get("timed_out")]
    notes += [f"cycle {r['cycle']}: no GPU readiness check ({r['no_gpu']})"
              for r in infos[:1] if r.get("no_gpu")]
    return notes


class LlemAggregateOperator(BaseOperator):
    """Aggregate a campaign run: statistics, summary files, the HTML report, and the
    compact per-configuration table as XCom. Runs whatever happened upstream (all_done)."""

    ui_color = "#ede9fe"
    operator_extra_links = (ReportLink(),)

    def __init__(self, *, cycle_limit: int, group_by: list[str] | None = None,
                 plan_task_id: str = "plan", **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.cycle_limit = cycle_limit
        self.group_by = group_by
        self.plan_task_id = plan_task_id
        self.report_run_dir: str | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        from llem_core.analysis.aggregate import aggregate_dir
        from llem_core.analysis.report import write_report

        ti = context["ti"]
        raw = ti.xcom_pull(task_ids=self.plan_task_id, key="plan")
        if raw is None:
            raise AirflowException("the plan task produced no plan: nothing to aggregate")
        plan = RunPlan.model_validate(raw)
        planned = plan.listing()["runs"]
        if plan.dry_run:
            digest = {"dry_run": True, "planned": planned, "run_dir": plan.run_dir,
                      "missing": []}
            self._publish(context, plan, {**digest, "planned": len(planned)})
            return digest
        cycles = range(1, self.cycle_limit + 1)
        ready = ti.xcom_pull(task_ids=[f"cycle_{k}.gpu_ready" for k in cycles],
                             key="readiness") or []
        summaries = ti.xcom_pull(task_ids=[f"cycle_{k}.experiment" for k in cycles]) or []
        # <results_dir> is the campaign's (checked by the trust policy); every folder and
        # file below it was writable by the experiments: read as untrusted input.
        results_dir = Path(plan.run_dir).parents[1]
        digest = aggregate_dir(plan.run_dir, planned, group_by=self.group_by,
                               notes=readiness_notes(ready), compare_to=plan.compare_to,
                               trusted=results_dir)
        digest["xcom_results"] = sum(1 for s in summaries
                                     if isinstance(s, dict) and "config_hash" in s)
        if digest["results"]:
            report = write_report(plan.run_dir, Path(plan.run_dir) / "report.html",
                                  compare_to=plan.compare_to, planned=planned,
                                  trusted=results_dir)
            digest["files"]["report"] = str(report)
            self.report_run_dir = plan.run_dir  # read by ReportLink when the task finishes
        self._publish(context, plan, digest)
        return digest

    def _publish(self, context: Any, plan: RunPlan, digest: dict[str, Any]) -> None:
        """The run's summary as the extra of the campaign asset's event (one per run)."""
        from llem_airflow.alerts import asset_summary

        for asset in self.outlets:
            context["outlet_events"][asset].extra = {
                **asset_summary(plan.campaign, plan.run_id, digest),
                "dry_run": plan.dry_run}
