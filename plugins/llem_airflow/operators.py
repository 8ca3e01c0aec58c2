"""Experiment tasks: one fresh Docker container (default) or one fresh subprocess per run.

Both run the same `llem run-experiment`, hand it the spec as an environment value (data,
never shell or Jinja), and return the *parsed result summary* read back from the result
file: DockerOperator's default XCom (the last log line) could be a stderr line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from llem_airflow.links import ReportLink, ResultJsonLink
from llem_core.results import SPEC_ENV

MAP_INDEX_TEMPLATE = "{{ task.run['name'] }} · cycle {{ task.run['cycle'] }}"


def read_summary(run: dict[str, Any]) -> dict[str, Any]:
    """The result file the experiment wrote, reduced to its summary plus the run's identity."""
    from llem_core.results import read_result

    path = Path(run["result_path"])
    if not path.exists():
        raise AirflowException(f"experiment finished but wrote no result at {path}")
    result = read_result(path)
    if (result.config_hash, result.cycle) != (run["config_hash"], run["cycle"]):
        raise AirflowException(f"{path} holds {result.config_hash}/cycle {result.cycle}, "
                               f"expected {run['config_hash']}/cycle {run['cycle']}")
    return result.summary(str(path))


class _GapMixin:
    """After an experiment, rest for config_gap_s deferred: no worker slot is held, and the
    GPU pool (include_deferred) keeps the GPU reserved so the next run cannot start early."""

    config_gap_s: float

    def _finish(self, context: Any, summary: dict[str, Any]) -> dict[str, Any]:
        if self.config_gap_s > 0:
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

            self.defer(  # type: ignore[attr-defined]
                trigger=TimeDeltaTrigger(timedelta(seconds=self.config_gap_s)),
                method_name="resume_after_gap", kwargs={"summary": summary})
        return summary

    def resume_after_gap(self, context: Any, event: Any = None,
                         summary: dict[str, Any] | None = None) -> dict[str, Any]:
        return summary or {}


class LlemDockerOperator(_GapMixin, DockerOperator):
    """A fresh container per experiment, no network, results folder mounted at its host path."""

    ui_color = "#dbeafe"
    operator_extra_links = (ResultJsonLink(),)

    def __init__(self, *, run: dict[str, Any], config_gap_s: float = 0.0, results_dir: str,
                 **kwargs: Any) -> None:
        kwargs.setdefault("network_mode", "none")
        kwargs.setdefault("auto_remove", "success")
        kwargs.setdefault("mount_tmp_dir", False)
        kwargs.setdefault("command", None)
        super().__init__(**kwargs)
        self.run = run
        self.config_gap_s = config_gap_s
        self.results_dir = results_dir

    def execute(self, context: Any) -> Any:
        from docker.types import Mount

        Path(self.results_dir).mkdir(parents=True, exist_ok=True)
        # Set here, after templating: the spec is data and must never be rendered by Jinja.
        self.environment = {**(self.environment or {}), SPEC_ENV: self.run["spec_json"],
                            "HOME": "/tmp", "LLEM_IN_CONTAINER": "1", "PYTHONUNBUFFERED": "1"}
        self.command = ["llem", "run-experiment", "--out", self.run["result_path"]]
        mounts = list(self.mounts or [])
        mounts.append(Mount(target=self.results_dir, source=self.results_dir, type="bind",
                            read_only=False))
        model = json.loads(self.run["spec_json"])["config"]["model"]
        from llem_core.config import is_local_path

        # Only this run's model, and only if it exists: a missing one must fail inside the
        # container with llem's one-line reason, not as a Docker mount error.
        if is_local_path(model) and Path(model).expanduser().is_dir():
            p = str(Path(model).expanduser())
            mounts.append(Mount(target=p, source=p, type="bind", read_only=True))
        self.mounts = mounts
        super().execute(context)
        return self._finish(context, read_summary(self.run))


class LlemLocalOperator(_GapMixin, BaseOperator):
    """A fresh Python subprocess per experiment, for machines without Docker."""

    ui_color = "#dcfce7"
    operator_extra_links = (ResultJsonLink(),)

    def __init__(self, *, run: dict[str, Any], config_gap_s: float = 0.0,
                 python: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.config_gap_s = config_gap_s
        self.python = python

    def execute(self, context: Any) -> Any:
        cmd = [self.python or sys.executable, "-m", "llem_core", "run-experiment",
               "--out", self.run["result_path"]]
        env = {**os.environ, SPEC_ENV: self.run["spec_json"], "PYTHONUNBUFFERED": "1"}
        self.log.info("running %s (%s, cycle %s)", " ".join(cmd), self.run["name"],
                      self.run["cycle"])
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        last = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                self.log.info("%s", line)
                last = line
        if proc.wait() != 0:
            raise AirflowException(f"llem run-experiment exited {proc.returncode}: {last}")
        return self._finish(context, read_summary(self.run))


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
        from llem_core.aggregate import aggregate_dir
        from llem_core.report import write_report

        ti = context["ti"]
        planned = ti.xcom_pull(task_ids=self.plan_task_id, key="plan") or []
        run_dir = ti.xcom_pull(task_ids=self.plan_task_id, key="run_dir")
        if run_dir is None:
            raise AirflowException("the plan task produced no plan: nothing to aggregate")
        if context["params"].get("dry_run"):
            return {"dry_run": True, "planned": planned, "run_dir": run_dir, "missing": []}
        cycles = range(1, self.cycle_limit + 1)
        ready = ti.xcom_pull(task_ids=[f"cycle_{k}.gpu_ready" for k in cycles],
                             key="readiness") or []
        notes = [f"cycle {r['cycle']}: GPU not ready after {r['waited_s']:.0f} s "
                 f"({'; '.join(r['reasons'])}); ran anyway"
                 for r in ready if isinstance(r, dict) and r.get("timed_out")]
        notes += [f"cycle {r['cycle']}: no GPU readiness check ({r['no_gpu']})"
                  for r in ready[:1] if isinstance(r, dict) and r.get("no_gpu")]
        summaries = ti.xcom_pull(task_ids=[f"cycle_{k}.experiment" for k in cycles]) or []
        digest = aggregate_dir(run_dir, planned, group_by=self.group_by, notes=notes)
        digest["xcom_results"] = sum(1 for s in summaries
                                     if isinstance(s, dict) and "config_hash" in s)
        if digest["results"]:
            report = write_report(run_dir, Path(run_dir) / "report.html")
            digest["files"]["report"] = str(report)
            self.report_run_dir = run_dir  # read by ReportLink when the task finishes
        return digest

