"""Operators of ``execution.isolation`` process and warm: the run's host setup and teardown
tasks, and the experiment task that hands its run to the host.

An experiment stays one Airflow task (clear/resume granularity, pools, GPU locks and
ordering are those of the container mode); only where it executes changes.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from llem_airflow import host_tasks
from llem_airflow.links import ResultJsonLink
from llem_airflow.operators import GPU_ORDER_ENV, HOST_ENV, ExperimentMixin, local_environment
from llem_core import env_names
from llem_core.campaign.planning import PlannedRun
from llem_core.runtime.supervisor.client import alive, run_on_host
from llem_core.runtime.supervisor.protocol import HostError, socket_path


class _HostMixin:
    """How to find, start and stop this DAG run's host."""

    mode: str
    runner_kind: str
    python: str | None
    docker: dict[str, Any] | None
    results_dir: str
    inputs: list[str]
    host_name: str
    host_gpus: list[int]
    log: Any

    def host_key(self, context: Any) -> str:
        ti = context["ti"]
        return host_tasks.key_for(ti.dag_id, ti.run_id, self.host_name, self.host_gpus)

    def start_host(self, key: str) -> dict[str, Any]:
        if self.runner_kind == "local":
            env = host_tasks.host_environment(local_environment(""))
            env.pop(env_names.SPEC_JSON, None)
            return host_tasks.start_local(key, self.mode, self.python, env)
        assert self.docker is not None
        env = host_tasks.host_environment({"HOME": "/tmp", env_names.IN_CONTAINER: "1",
                                           **GPU_ORDER_ENV})
        env[HOST_ENV] = env.pop(env_names.HOST_NAME)
        return host_tasks.start_docker(key, self.mode, self.docker, self.results_dir,
                                       self.inputs, env)


def _set_host_fields(op: Any, mode: str, runner_kind: str, python: str | None,
                     docker: dict[str, Any] | None, results_dir: str, inputs: list[str],
                     host_name: str, host_gpus: list[int]) -> None:
    op.mode, op.runner_kind, op.python, op.docker = mode, runner_kind, python, docker
    op.results_dir, op.inputs, op.host_name, op.host_gpus = (results_dir, list(inputs),
                                                             host_name, list(host_gpus))


class LlemHostOperator(_HostMixin, BaseOperator):
    """``action`` start: the run's setup task; stop: its teardown (runs whatever happened)."""

    ui_color = "#fef3c7"
    template_fields = ()

    def __init__(self, *, action: str, mode: str, runner_kind: str, python: str | None,
                 docker: dict[str, Any] | None, results_dir: str, inputs: list[str],
                 host_name: str, host_gpus: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action = action
        _set_host_fields(self, mode, runner_kind, python, docker, results_dir, inputs,
                         host_name, host_gpus)

    def execute(self, context: Any) -> dict[str, Any]:
        key = self.host_key(context)
        if self.action == "stop":
            done = host_tasks.stop(key, self.docker["docker_url"] if self.docker else None)
            self.log.info("experiment host %s: %s", key, "; ".join(done) or "nothing running")
            return {"key": key, "stopped": done}
        try:
            info = self.start_host(key)
        except HostError as exc:
            raise AirflowException(str(exc)) from None
        self.log.info("experiment host %s started (%s mode): %s", key, self.mode, info)
        return info


class LlemHostedOperator(_HostMixin, ExperimentMixin, BaseOperator):
    """One experiment, run by the DAG run's host (restarted here if it is gone)."""

    ui_color = "#ede9fe"
    operator_extra_links = (ResultJsonLink(),)
    template_fields = ()

    def __init__(self, *, run: dict[str, Any], mode: str, runner_kind: str,
                 python: str | None, docker: dict[str, Any] | None, results_dir: str,
                 inputs: list[str], host_name: str, host_gpus: list[int],
                 config_gap_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _set_host_fields(self, mode, runner_kind, python, docker, results_dir, inputs,
                         host_name, host_gpus)
        self.run = run
        self.config_gap_s = config_gap_s

    def _launch(self, context: Any, run: PlannedRun) -> None:
        key = self.host_key(context)
        sock = socket_path(key)
        if alive(sock) is None:
            if context["ti"].xcom_pull(task_ids="host_start") is None:
                # no teardown would remove a host started now (it follows a failed setup)
                raise AirflowException("the run's experiment host was never started "
                                       "(host_start did not succeed): see that task's log")
            self.log.warning("the run's experiment host is gone: starting a new one")
            try:
                self.start_host(key)
            except HostError as exc:
                raise AirflowException(str(exc)) from None
        self.log.info("running %s (cycle %d) on the experiment host (%s mode)", run.name,
                      run.cycle, self.mode)
        timeout = self.execution_timeout.total_seconds() if self.execution_timeout else None
        last: list[str] = [""]

        def log(line: str) -> None:
            if line.strip():
                self.log.info("%s", line)
                last[0] = line

        try:
            rc, reason = run_on_host(sock, run.spec.model_dump_json(), run.result_path, log,
                                     timeout)
        except HostError as exc:
            raise AirflowException(f"{exc}; the next experiment starts a new host") from None
        if rc != 0:
            raise AirflowException(f"experiment failed on the host ({reason or 'exit ' + str(rc)})"
                                   f": {last[0]}")
