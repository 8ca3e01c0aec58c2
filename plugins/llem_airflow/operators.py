"""Experiment tasks: what every runner shares, and one fresh subprocess per run (the
local runner; the Docker runner's container is in :mod:`llem_airflow.docker_operator`, so
a task that does not start containers never imports the Docker client).

Both run the same `llem run-experiment`, hand it the spec as an environment value (data,
never shell or Jinja), hold a lock on each of the run's host GPUs while it runs, and
return the *parsed result summary* read back from the result file: DockerOperator's
default XCom (the last log line) could be a stderr line.

Resume never re-measures: a run whose result for this DAG run already exists and
validates (same campaign, run, configuration hash and cycle) returns that result without
measuring, and says so in its log. Re-measuring is a deliberate act: remove the result
file, then clear the task.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from llem_airflow.links import ResultJsonLink
from llem_core import env_names
from llem_core.analysis.results import SPEC_ENV, ExperimentResult, read_result
from llem_core.campaign.planning import PlannedRun
from llem_core.runtime.gpu_lock import hold_gpus

# Airflow stores the rendered label in a VARCHAR(250) column (task_instance and its
# history): PostgreSQL refuses a longer one, failing the task's state updates, and a name
# derived from grid values has no length limit (SQLite does not enforce it).
MAP_INDEX_NAME_CHARS = 200
MAP_INDEX_TEMPLATE = (f"{{{{ task.run['name'][:{MAP_INDEX_NAME_CHARS}] }}}} · "
                      "cycle {{ task.run['cycle'] }}")
HOST_ENV = env_names.HOST_NAME
# What a local experiment process inherits from the worker: never its secrets
# (metadata DB URL, Fernet key, JWT secret live in AIRFLOW__* variables).
LOCAL_ENV_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
                  "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "OMP_NUM_THREADS",
                  "MKL_NUM_THREADS", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE",
                  "TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE", "OPENBLAS_CORETYPE",
                  "OPENBLAS_L2_SIZE")
LOCAL_ENV_PREFIXES = ("LC_", env_names.PREFIX)
# `gpus` index the GPUs as NVML does (PCI order; pools, locks and the meter use it): torch
# must count them the same way, and a worker's CUDA_VISIBLE_DEVICES must not renumber them.
GPU_ORDER_ENV = {env_names.CUDA_DEVICE_ORDER: env_names.PCI_BUS_ID}


def _matches(result: ExperimentResult, run: PlannedRun) -> bool:
    spec = run.spec
    return (result.campaign, result.run_id, result.config_hash, result.cycle) == \
        (spec.campaign, spec.run_id, run.config_hash, run.cycle)


def _read(path: Path) -> ExperimentResult:
    """The result file as untrusted input: nothing below <results_dir> (the layout's
    <results_dir>/<campaign>/<run>/<hash>/cycle_<k>.json) is a followed link, a FIFO
    or device is refused instead of blocking the task."""
    return read_result(path, trusted=path.parents[3] if len(path.parents) > 3 else None)


def read_summary(run: PlannedRun) -> dict[str, Any]:
    """The result file the experiment wrote, reduced to its summary plus the run's identity."""
    path = Path(run.result_path)
    if not path.exists():
        raise AirflowException(f"experiment finished but wrote no result at {path}")
    result = _read(path)
    if not _matches(result, run):
        raise AirflowException(f"{path} holds {result.config_hash}/cycle {result.cycle} of "
                               f"run {result.run_id}, expected {run.config_hash}/cycle "
                               f"{run.cycle} of {run.spec.run_id}")
    return result.summary(str(path))


def existing_summary(run: PlannedRun) -> dict[str, Any] | None:
    """The summary of this run's result if it was already measured, else None.

    A file that is there but cannot be trusted is never replaced as a side effect: the
    task fails and says how to re-measure.
    """
    path = Path(run.result_path)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        result = _read(path)
    except (OSError, ValueError) as exc:
        raise AirflowException(
            f"{path} exists but is not a valid result ({str(exc).splitlines()[0][:200]}); "
            "it is kept: move it away and clear this task to measure again") from None
    if not _matches(result, run):
        raise AirflowException(f"{path} holds another run's result; it is kept: move it away "
                               "and clear this task to measure again")
    return {**result.summary(str(path)), "reused": True}


class ExperimentMixin:
    """What both runners share: the validated run, resume, GPU locks and the config gap.

    After an experiment it rests for config_gap_s deferred: no worker slot is held, and
    the GPU pool (include_deferred) keeps the GPU reserved so the next run cannot start
    early.
    """

    run: dict[str, Any]
    config_gap_s: float
    log: Any

    @property
    def planned(self) -> PlannedRun:
        return PlannedRun.model_validate(self.run)

    def execute(self, context: Any) -> Any:
        return self._measure(context, self._launch)  # type: ignore[attr-defined]

    def _measure(self, context: Any, launch: Any) -> dict[str, Any]:
        run = self.planned
        done = existing_summary(run)
        if done is not None:
            self.log.info("%s (cycle %d) was already measured at %s: returning that result "
                          "without measuring again (remove the file and clear this task to "
                          "re-measure)", run.name, run.cycle, run.result_path)
            return done
        with hold_gpus(run.placement.host_gpus, self.log.info) as waited:
            if waited > 1:
                self.log.info("waited %.0f s for GPUs %s", waited, run.placement.host_gpus)
            launch(context, run)
        return self._finish(context, read_summary(run))

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


def run_inputs(run: PlannedRun) -> list[str]:
    """Host paths an experiment reads: its local model folder and its JSONL prompts.

    Only those that exist: a missing one must fail inside the container with llem's
    one-line reason, not as a Docker mount error.
    """
    from llem_core.campaign.config import is_local_path

    cfg = run.spec.config
    paths = []
    if is_local_path(cfg.model) and Path(cfg.model).expanduser().is_dir():
        paths.append(str(Path(cfg.model).expanduser()))
    if cfg.prompts.kind == "jsonl" and Path(cfg.prompts.path).is_file():
        paths.append(str(Path(cfg.prompts.path)))
    return paths


def local_environment(spec_json: str, source: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a local experiment process: an allow-list, plus its spec."""
    source = dict(os.environ if source is None else source)
    env = {k: v for k, v in source.items()
           if k in LOCAL_ENV_KEEP or k.startswith(LOCAL_ENV_PREFIXES)}
    env.update({SPEC_ENV: spec_json, env_names.PYTHONUNBUFFERED: "1",
                HOST_ENV: socket.gethostname(),
                **GPU_ORDER_ENV})
    return env


class LlemLocalOperator(ExperimentMixin, BaseOperator):
    """A fresh Python subprocess per experiment, for machines without Docker."""

    ui_color = "#dcfce7"
    operator_extra_links = (ResultJsonLink(),)

    def __init__(self, *, run: dict[str, Any], config_gap_s: float = 0.0,
                 python: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.config_gap_s = config_gap_s
        self.python = python

    def _launch(self, context: Any, run: PlannedRun) -> None:
        cmd = [self.python or sys.executable, "-m", "llem_core", "run-experiment",
               "--out", run.result_path]
        self.log.info("running %s (%s, cycle %s)", " ".join(cmd), run.name, run.cycle)
        env = local_environment(run.spec.model_dump_json())  # the spec holds its isolation
        proc = subprocess.Popen(cmd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                self.log.info("%s", line)
                last = line
        if proc.wait() != 0:
            raise AirflowException(f"llem run-experiment exited {proc.returncode}: {last}")
