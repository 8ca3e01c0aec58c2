"""GPU energy through NVML (nvidia-ml-py).

The primary figure is the total-energy counter (millijoules since driver load, Volta and
newer). Power is polled in a thread at the configured interval, both as the fallback on
older GPUs and as a cross-check of the counter; temperature, SM clock and throttle
reasons are sampled with it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llem_core.energy.base import Baseline, EnergyReading, MeterUnavailable
from llem_core.energy.trace import counter_delta, detect_update_period, integrate_power

# Throttle reasons that mean the numbers were taken on a slowed GPU.
_THROTTLE_NAMES = {
    0x0000000000000002: "applications_clocks_setting",
    0x0000000000000004: "sw_power_cap",
    0x0000000000000008: "hw_slowdown",
    0x0000000000000020: "sw_thermal_slowdown",
    0x0000000000000040: "hw_thermal_slowdown",
    0x0000000000000080: "hw_power_brake_slowdown",
}


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in _THROTTLE_NAMES.items() if mask & bit]


@dataclass
class _Trace:
    times: list[float] = field(default_factory=list)
    watts: dict[int, list[float]] = field(default_factory=dict)
    temps: dict[int, list[float]] = field(default_factory=dict)
    sm_clock: dict[int, list[float]] = field(default_factory=dict)
    throttle: dict[int, int] = field(default_factory=dict)


class NvmlMeter:
    """Meters the GPUs given by index (as NVML numbers them in this process)."""

    def __init__(self, gpus: list[int], poll_interval_s: float = 0.1) -> None:
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise MeterUnavailable(f"nvidia-ml-py is not installed: {exc}") from exc
        self._nv = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML cannot start (no NVIDIA driver/GPU?): {exc}") from exc
        count = pynvml.nvmlDeviceGetCount()
        missing = [g for g in gpus if g >= count]
        if not gpus or missing:
            pynvml.nvmlShutdown()
            raise MeterUnavailable(f"GPU index {missing or gpus} not present ({count} GPUs seen)")
        self.gpus = list(gpus)
        self._handles = {g: pynvml.nvmlDeviceGetHandleByIndex(g) for g in gpus}
        self.poll_interval_s = poll_interval_s
        self.has_counter = all(self._counter(h) is not None for h in self._handles.values())
        self.source = "nvml_counter" if self.has_counter else "nvml_power"
        self.counter_update_period_s: float | None = None
        if self.has_counter:
            first = self._handles[self.gpus[0]]
            self.counter_update_period_s = detect_update_period(
                lambda: self._counter(first) or 0, time.monotonic, sleep=time.sleep)
        self._instant_ok = self._instant_power(self._handles[self.gpus[0]]) is not None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trace = _Trace()
        self._t0 = 0.0
        self._counter0: dict[int, int] = {}

    # -- raw reads -------------------------------------------------------------------------
    def _counter(self, handle: Any) -> int | None:
        try:
            return int(self._nv.nvmlDeviceGetTotalEnergyConsumption(handle))
        except self._nv.NVMLError:
            return None

    def _instant_power(self, handle: Any) -> float | None:
        try:
            [value] = self._nv.nvmlDeviceGetFieldValues(
                handle, [self._nv.NVML_FI_DEV_POWER_INSTANT])
            if value.nvmlReturn != self._nv.NVML_SUCCESS:
                return None
            return float(value.value.uiVal) / 1000.0
        except (self._nv.NVMLError, AttributeError):
            return None

    def _power(self, handle: Any) -> float:
        if self._instant_ok:
            w = self._instant_power(handle)
            if w is not None:
                return w
        return self._nv.nvmlDeviceGetPowerUsage(handle) / 1000.0

    def _sample(self) -> None:
        now = time.monotonic()
        tr = self._trace
        tr.times.append(now)
        for g, h in self._handles.items():
            tr.watts.setdefault(g, []).append(self._power(h))
            try:
                tr.temps.setdefault(g, []).append(float(self._nv.nvmlDeviceGetTemperature(
                    h, self._nv.NVML_TEMPERATURE_GPU)))
                tr.sm_clock.setdefault(g, []).append(float(self._nv.nvmlDeviceGetClockInfo(
                    h, self._nv.NVML_CLOCK_SM)))
                tr.throttle[g] = tr.throttle.get(g, 0) | int(
                    self._nv.nvmlDeviceGetCurrentClocksEventReasons(h))
            except (self._nv.NVMLError, AttributeError):
                pass

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.poll_interval_s)

    # -- protocol --------------------------------------------------------------------------
    def devices(self) -> list[str]:
        return [f"gpu{g}" for g in self.gpus]

    def hardware(self) -> dict[str, object]:
        nv = self._nv
        info: dict[str, object] = {"meter": self.source, "gpus": []}
        try:
            info["driver"] = _text(nv.nvmlSystemGetDriverVersion())
            cuda = nv.nvmlSystemGetCudaDriverVersion()
            info["cuda_driver"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        except nv.NVMLError:
            pass
        for g, h in self._handles.items():
            gpu: dict[str, object] = {"index": g, "name": _text(nv.nvmlDeviceGetName(h))}
            try:
                gpu["uuid"] = _text(nv.nvmlDeviceGetUUID(h))
                gpu["memory_total_bytes"] = int(nv.nvmlDeviceGetMemoryInfo(h).total)
                gpu["power_limit_w"] = nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0
            except nv.NVMLError:
                pass
            info["gpus"].append(gpu)  # type: ignore[union-attr]
        info["counter_update_period_s"] = self.counter_update_period_s
        info["instant_power_field"] = self._instant_ok
        return info

    def idle(self, seconds: float) -> Baseline:
        self.begin()
        time.sleep(seconds)
        reading = self.end()
        per = {k: v / reading.window_s for k, v in reading.per_device_j.items()}
        return Baseline(watts=reading.joules / reading.window_s, seconds=reading.window_s,
                        source=reading.source, per_device_w=per)

    def begin(self) -> None:
        self._trace = _Trace()
        self._stop.clear()
        self._counter0 = {g: self._counter(h) or 0 for g, h in self._handles.items()} \
            if self.has_counter else {}
        self._t0 = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._poll, name="llem-nvml-poll", daemon=True)
        self._thread.start()

    def end(self) -> EnergyReading:
        counter1 = {g: self._counter(h) or 0 for g, h in self._handles.items()} \
            if self.has_counter else {}
        t1 = time.monotonic()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        window = t1 - self._t0
        tr = self._trace
        polled = {g: integrate_power(tr.times, w) for g, w in tr.watts.items()}
        if self.has_counter:
            per = {f"gpu{g}": counter_delta(self._counter0[g], counter1[g], None) / 1000.0
                   for g in self.gpus}
        else:
            per = {f"gpu{g}": polled[g] for g in self.gpus}
        thermal: dict[str, object] = {}
        for g in self.gpus:
            temps = tr.temps.get(g) or []
            clocks = tr.sm_clock.get(g) or []
            thermal[f"gpu{g}"] = {
                "temperature_start_c": temps[0] if temps else None,
                "temperature_end_c": temps[-1] if temps else None,
                "temperature_max_c": max(temps) if temps else None,
                "sm_clock_mhz_min": min(clocks) if clocks else None,
                "sm_clock_mhz_max": max(clocks) if clocks else None,
                "throttle_reasons": throttle_names(tr.throttle.get(g, 0)),
            }
        return EnergyReading(
            source=self.source, joules=sum(per.values()), window_s=window, per_device_j=per,
            polled_joules=sum(polled.values()), polled_samples=len(tr.times),
            counter_update_period_s=self.counter_update_period_s, thermal=thermal)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        with contextlib.suppress(self._nv.NVMLError):
            self._nv.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
