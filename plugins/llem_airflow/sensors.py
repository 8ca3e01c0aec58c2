"""GPU readiness / cool-down sensor that opens every cycle.

Reschedule mode: between pokes no worker slot is held. It first honours the cycle gap,
then waits until the campaign's *host* GPUs (its placement) are cool, nearly empty and
free of foreign processes. On timeout it warns, records that in its XCom (the aggregate
reports it) and lets the cycle run: a campaign is never failed by a busy GPU. Where no
GPU exists it passes at once, saying why.

Its return value is the cycle's planned runs (read from the plan task's ``cycle_<k>``
XCom and validated), which the cycle's experiment task is mapped over: Airflow maps only
over return values, and this way the mapping starts only once the GPU is ready.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSkipException

from llem_core.campaign.config import Health
from llem_core.campaign.planning import PlannedRun
from llem_core.runtime.health import GpuState, Thresholds, check, read_gpus


class GpuReadySensor(BaseSensorOperator):
    ui_color = "#fef3c7"
    # how GPU state is read; tests give a simulated GPU
    reader: ClassVar[Callable[[list[int] | None], list[GpuState]]] = staticmethod(read_gpus)

    def __init__(self, *, cycle: int, host_gpus: list[int], health: Health, gap_s: float = 0.0,
                 plan_task_id: str = "plan", warm_host: str | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", health.poke_interval_s)
        # The sensor's own hard timeout must never fire before ours, which does not fail.
        kwargs.setdefault("timeout", gap_s + health.timeout_s + 3600)
        super().__init__(**kwargs)
        self.cycle = cycle
        self.host_gpus = list(host_gpus)
        self.health = health
        self.gap_s = gap_s
        self.plan_task_id = plan_task_id
        # isolation warm: the host's name; its kept model/engine is released before the
        # check, or it would count as memory in use and another process on the GPUs
        self.warm_host = warm_host

    def _runs(self, context: Any) -> list[dict[str, Any]]:
        params = context["params"]
        if params.get("dry_run"):
            raise AirflowSkipException("dry run: plan only")
        if self.cycle > int(params["cycles"]):
            raise AirflowSkipException(
                f"cycle {self.cycle} is beyond this run's {params['cycles']} cycles")
        runs = context["ti"].xcom_pull(task_ids=self.plan_task_id, key=f"cycle_{self.cycle}")
        if not runs:
            raise AirflowSkipException(f"cycle {self.cycle} has no runs in this plan")
        # validated on read: a malformed hand-off fails here, not inside an experiment
        return [PlannedRun.model_validate(r).model_dump(mode="json") for r in runs]

    def _release_warm_host(self, context: Any) -> None:
        from llem_airflow.host_tasks import key_for
        from llem_core.runtime.supervisor.client import request
        from llem_core.runtime.supervisor.protocol import HostError, socket_path

        ti = context["ti"]
        sock = socket_path(key_for(ti.dag_id, ti.run_id, str(self.warm_host), self.host_gpus))
        try:
            request(sock, {"op": "release"}, timeout_s=60.0)
            self.log.info("the warm host released its kept model/engine before the check")
        except HostError as exc:
            self.log.info("no warm host to release (%s)", exc)

    def poke(self, context: Any) -> bool | PokeReturnValue:
        runs = self._runs(context)
        now = datetime.now(UTC)
        first = context["ti"].get_first_reschedule_date(context) or now
        elapsed = (now - first).total_seconds()
        if elapsed < self.gap_s:
            self.log.info("cycle gap: %.0f of %.0f s elapsed", elapsed, self.gap_s)
            return False
        if not self.host_gpus:
            return self._done(context, self._info(elapsed, no_gpu="the campaign runs on the "
                                                  "CPU"), runs)
        if self.warm_host is not None:  # only a GPU check would count what it keeps
            self._release_warm_host(context)
        h = self.health
        r = check(self.host_gpus, Thresholds(h.max_temperature_c, h.max_memory_used_pct,
                                             h.allow_foreign_processes), type(self).reader)
        info = self._info(elapsed, ready=r.ready, reasons=r.reasons, gpus=r.gpus,
                          no_gpu=r.no_gpu)
        if r.no_gpu:
            self.log.info("no GPU to check (%s): passing at once", r.no_gpu)
            return self._done(context, info, runs)
        if r.ready:
            self.log.info("host GPUs %s ready", self.host_gpus)
            return self._done(context, info, runs)
        if elapsed - self.gap_s >= h.timeout_s:
            self.log.warning("GPU not ready after %.0f s (%s); running cycle %d anyway",
                             elapsed - self.gap_s, "; ".join(r.reasons), self.cycle)
            info["timed_out"] = True
            return self._done(context, info, runs)
        self.log.info("GPU not ready: %s", "; ".join(r.reasons))
        return False

    def _info(self, waited_s: float, ready: bool = True, reasons: list[str] | None = None,
              gpus: list[dict[str, Any]] | None = None,
              no_gpu: str | None = None) -> dict[str, Any]:
        return {"cycle": self.cycle, "host_gpus": self.host_gpus, "ready": ready,
                "reasons": reasons or [], "gpus": gpus or [], "no_gpu": no_gpu,
                "waited_s": waited_s, "timed_out": False}

    def _done(self, context: Any, info: dict[str, Any],
              runs: list[dict[str, Any]]) -> PokeReturnValue:
        context["ti"].xcom_push(key="readiness", value=info)
        return PokeReturnValue(is_done=True, xcom_value=runs)
