"""GPU readiness / cool-down sensor that opens every cycle.

Reschedule mode: between pokes no worker slot is held. It first honours the cycle gap,
then waits until the GPU is cool, nearly empty and free of foreign processes. On timeout
it warns, records that in its XCom (the aggregate reports it) and lets the cycle run: a
campaign is never failed by a busy GPU. Where no GPU exists it passes at once, saying why.

Its return value is the cycle's list of runs (read from the plan task's ``cycle_<k>``
XCom), which the cycle's experiment task is mapped over: Airflow maps only over return
values, and this way the mapping starts only once the GPU is ready.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSkipException

from llem_core.health import Thresholds, check


class GpuReadySensor(BaseSensorOperator):
    ui_color = "#fef3c7"

    def __init__(self, *, cycle: int, gpus: list[int] | None, thresholds: dict[str, Any],
                 ready_timeout_s: float, gap_s: float = 0.0, plan_task_id: str = "plan",
                 **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        # The sensor's own hard timeout must never fire before ours, which does not fail.
        kwargs.setdefault("timeout", gap_s + ready_timeout_s + 3600)
        super().__init__(**kwargs)
        self.cycle = cycle
        self.gpus = gpus
        self.thresholds = thresholds
        self.ready_timeout_s = ready_timeout_s
        self.gap_s = gap_s
        self.plan_task_id = plan_task_id

    def poke(self, context: Any) -> bool | PokeReturnValue:
        params = context["params"]
        if params.get("dry_run"):
            raise AirflowSkipException("dry run: plan only")
        if self.cycle > int(params["cycles"]):
            raise AirflowSkipException(
                f"cycle {self.cycle} is beyond this run's {params['cycles']} cycles")
        runs = context["ti"].xcom_pull(task_ids=self.plan_task_id, key=f"cycle_{self.cycle}")
        if not runs:
            raise AirflowSkipException(f"cycle {self.cycle} has no runs in this plan")
        now = datetime.now(UTC)
        first = context["ti"].get_first_reschedule_date(context) or now
        elapsed = (now - first).total_seconds()
        if elapsed < self.gap_s:
            self.log.info("cycle gap: %.0f of %.0f s elapsed", elapsed, self.gap_s)
            return False
        r = check(self.gpus, Thresholds(**self.thresholds))
        info = {"cycle": self.cycle, "ready": r.ready, "reasons": r.reasons, "gpus": r.gpus,
                "no_gpu": r.no_gpu, "waited_s": elapsed, "timed_out": False}
        if r.no_gpu:
            self.log.info("no GPU to check (%s): passing at once", r.no_gpu)
            return self._done(context, info, runs)
        if r.ready:
            self.log.info("GPU ready: %s", r.gpus)
            return self._done(context, info, runs)
        if elapsed - self.gap_s >= self.ready_timeout_s:
            self.log.warning("GPU not ready after %.0f s (%s); running cycle %d anyway",
                             elapsed - self.gap_s, "; ".join(r.reasons), self.cycle)
            info["timed_out"] = True
            return self._done(context, info, runs)
        self.log.info("GPU not ready: %s", "; ".join(r.reasons))
        return False

    def _done(self, context: Any, info: dict[str, Any], runs: list[Any]) -> PokeReturnValue:
        context["ti"].xcom_push(key="readiness", value=info)
        return PokeReturnValue(is_done=True, xcom_value=runs)
