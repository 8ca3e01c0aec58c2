"""The change-point task: after the aggregate, look for changes over the campaign's history.

Every (configuration, metric) series of the campaign's alert metrics is searched over
all runs (``llem_core.analysis.history`` / ``llem_core.analysis.regression``). The change
points this run
brought (absent from the history without it) are written to the run folder as
``change_points.json`` (the DAG run's tab and ``/llem/history`` show them), returned as
XCom, and sent through the campaign's notifiers. A run that brings none notifies no one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from llem_core.campaign.planning import RunPlan

CHANGE_FILE = "change_points.json"


def _records(df: Any) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records")) if len(df) else []


class LlemChangePointOperator(BaseOperator):
    """Find change points over the campaign's runs; notify on the ones this run brought."""

    ui_color = "#fef3c7"

    def __init__(self, *, campaign: str, metrics: list[str], alerts: dict[str, Any] | None,
                 plan_task_id: str = "plan", **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.campaign = campaign
        self.metrics = metrics
        self.alerts = alerts
        self.plan_task_id = plan_task_id

    def execute(self, context: Any) -> dict[str, Any]:
        from llem_core.analysis.history import history, new_change_points
        from llem_core.analysis.regression import METHOD
        from llem_core.analysis.results import write_atomic

        raw = context["ti"].xcom_pull(task_ids=self.plan_task_id, key="plan")
        if raw is None:
            raise AirflowException("the plan task produced no plan: no history to search")
        plan = RunPlan.model_validate(raw)
        if plan.dry_run:
            return {"dry_run": True, "new": [], "all": []}
        run_dir = Path(plan.run_dir)
        # <results_dir>/<campaign>: every file below <results_dir> was writable by the
        # experiments, so the history reads it as untrusted input
        h = history(run_dir.parent, tuple(self.metrics), trusted=run_dir.parents[1],
                    campaign=self.campaign)
        fresh = new_change_points(h, plan.run_id)
        out = {"campaign": self.campaign, "run_id": plan.run_id, "runs": len(h.runs),
               "metrics": self.metrics, "method": METHOD,
               "max_pvalue": h.max_pvalue, "window": h.window,
               "new": _records(fresh), "all": _records(h.change_points),
               "notified": [], "notify_problems": []}
        if fresh.empty or not self.alerts or not self.alerts.get("notify"):
            write_atomic(run_dir / CHANGE_FILE, json.dumps(out, indent=2))
            return out
        from llem_airflow.alerts import send
        from llem_core.cli_history import change_line

        lines = [change_line(c) for c in out["new"]]
        title = (f"llem campaign {self.campaign}: {len(lines)} new change point(s) "
                 f"in run {plan.run_id}")
        problems = send(self.alerts, title, lines, None, context)
        out["notified"] = [n["notifier"] for n in self.alerts["notify"]]
        out["notify_problems"] = problems
        write_atomic(run_dir / CHANGE_FILE, json.dumps(out, indent=2))
        if problems:
            raise AirflowException("change points recorded, but notifying failed: "
                                   + "; ".join(problems))
        return out
