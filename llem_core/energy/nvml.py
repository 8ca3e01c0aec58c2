"""GPU energy through NVML (nvidia-ml-py).

The primary figure is the total-energy counter (millijoules since driver load, Volta and
newer). From the moment the meter opens until it closes, a thread polls power at the
configured interval, both as the fallback on older GPUs and as a cross-check of the
counter; temperature, SM clock and throttle reasons are sampled with it. A window is the
span between two marks, so windows may overlap.

A sensor read that fails never becomes a number: a counter read is retried a few times,
and a window whose counter cannot be trusted at either edge is measured by integrating
the polled power instead (and flagged); a failed power sample is skipped and counted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llem_core.energy.base import EnergyReading, MeterUnavailable
from llem_core.energy.trace import covered_energy, detect_update_period
from llem_core.nvml_init import init_nvml

COUNTER_TRIES = 3
COUNTER_RETRY_S = 0.02
# Polled power bridges a gap of failed samples up to this long (polls, or seconds if more);
# a longer one leaves the window without a polled energy.
MAX_GAP_POLLS = 5
MAX_GAP_MIN_S = 0.5

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


@dataclass(slots=True)
class _Sample:
    t: float
    watts: float | None
    temperature_c: float | None
    sm_clock_mhz: float | None
    throttle: int


@dataclass
class NvmlMark:
    """One window edge: when, each GPU's counter (None: unreadable) and failed attempts."""

    t: float
    counters: dict[int, int | None] = field(default_factory=dict)
    failed_reads: int = 0


class NvmlMeter:
    """Meters the GPUs given by index (as NVML numbers them in this process)."""

    def __init__(self, gpus: list[int], poll_interval_s: float = 0.1) -> None:
        pynvml = init_nvml(MeterUnavailable)
        self._nv = pynvml
        try:
            count = pynvml.nvmlDeviceGetCount()
            missing = [g for g in gpus if g >= count]
            if not gpus or missing:
                raise MeterUnavailable(f"GPU index {missing or gpus} not present "
                                       f"({count} GPUs seen)")
            self._handles = {g: pynvml.nvmlDeviceGetHandleByIndex(g) for g in gpus}
        except (MeterUnavailable, pynvml.NVMLError) as exc:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
            raise MeterUnavailable(str(exc)) from exc
        self.gpus = list(gpus)
        self.poll_interval_s = poll_interval_s
        self.has_counter = all(self._counter(h)[0] is not None for h in self._handles.values())
        self.source = "nvml_counter" if self.has_counter else "nvml_power"
        self.counter_update_period_s: float | None = None
        if self.has_counter:
            first = self._handles[self.gpus[0]]
            self.counter_update_period_s = detect_update_period(
                lambda: self._counter_once(first), time.monotonic, sleep=time.sleep)
        self._instant_ok = self._instant_power(self._handles[self.gpus[0]]) is not None
        self._lock = threading.Lock()
        self._samples: dict[int, list[_Sample]] = {g: [] for g in self.gpus}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="llem-nvml-poll", daemon=True)
        self._thread.start()

    # -- raw reads -------------------------------------------------------------------------
    def _counter_once(self, handle: Any) -> int | None:
        try:
            value = int(self._nv.nvmlDeviceGetTotalEnergyConsumption(handle))
        except self._nv.NVMLError:
            return None
        # The counter runs since the driver loaded: a 0 is a failed read, not a value.
        return value if value > 0 else None

    def _counter(self, handle: Any) -> tuple[int | None, int]:
        """The counter after up to COUNTER_TRIES attempts, and how many attempts failed."""
        for attempt in range(COUNTER_TRIES):
            value = self._counter_once(handle)
            if value is not None:
                return value, attempt
            if attempt + 1 < COUNTER_TRIES:
                time.sleep(COUNTER_RETRY_S)
        return None, COUNTER_TRIES

    def _instant_power(self, handle: Any) -> float | None:
        try:
            [value] = self._nv.nvmlDeviceGetFieldValues(
                handle, [self._nv.NVML_FI_DEV_POWER_INSTANT])
            if value.nvmlReturn != self._nv.NVML_SUCCESS:
                return None
            return float(value.value.uiVal) / 1000.0
        except (self._nv.NVMLError, AttributeError):
            return None

    def _power(self, handle: Any) -> float | None:
        if self._instant_ok:
            w = self._instant_power(handle)
            if w is not None:
                return w
        try:
            return self._nv.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except self._nv.NVMLError:
            return None

    def _optional(self, read: Any, *args: Any) -> Any:
        try:
            return read(*args)
        except (self._nv.NVMLError, AttributeError):
            return None

    def _sample(self) -> float:
        nv = self._nv
        with self._lock:
            now = time.monotonic()
            for g, h in self._handles.items():
                temp = self._optional(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
                clock = self._optional(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM)
                mask = self._optional(nv.nvmlDeviceGetCurrentClocksEventReasons, h)
                self._samples[g].append(_Sample(
                    now, self._power(h), None if temp is None else float(temp),
                    None if clock is None else float(clock), int(mask or 0)))
        return now

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.poll_interval_s)

    # -- protocol --------------------------------------------------------------------------
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

    def mark(self) -> NvmlMark:
        mark = NvmlMark(t=self._sample())
        if self.has_counter:
            for g, h in self._handles.items():
                mark.counters[g], failed = self._counter(h)
                mark.failed_reads += failed
        return mark

    def _untrusted(self, start: NvmlMark, end: NvmlMark) -> list[str]:
        """Why the counter cannot give this window's energy (empty: it can)."""
        why = []
        for g in self.gpus:
            c0, c1 = start.counters.get(g), end.counters.get(g)
            if c0 is None:
                why.append(f"gpu{g} energy counter unreadable at the window's start "
                           f"({COUNTER_TRIES} tries)")
            if c1 is None:
                why.append(f"gpu{g} energy counter unreadable at the window's end "
                           f"({COUNTER_TRIES} tries)")
            if c0 is not None and c1 is not None and c1 < c0:
                why.append(f"gpu{g} energy counter went backwards ({c0} -> {c1} mJ): "
                           "driver reset or bad read")
        return why

    def reading(self, start: NvmlMark, end: NvmlMark) -> EnergyReading:
        with self._lock:
            window = {g: [s for s in ss if start.t <= s.t <= end.t]
                      for g, ss in self._samples.items()}
        polled: dict[int, float | None] = {}
        gap = max(MAX_GAP_POLLS * self.poll_interval_s, MAX_GAP_MIN_S)
        gaps = []
        for g, ss in window.items():
            good = [s for s in ss if s.watts is not None]
            polled[g] = covered_energy([s.t for s in good], [s.watts for s in good],
                                       start.t, end.t, gap)
            if polled[g] is None:
                gaps.append(f"gpu{g} power samples read leave a gap over {gap:.2f} s "
                            "in the window")
        failed = sum(1 for ss in window.values() for s in ss if s.watts is None)
        polled_total = None if None in polled.values() else sum(polled.values())  # type: ignore[arg-type]
        r = EnergyReading(
            source=self.source, joules=None, window_s=end.t - start.t,
            polled_joules=polled_total, polled_samples=len(window[self.gpus[0]]),
            failed_samples=failed, counter_failed_reads=start.failed_reads + end.failed_reads,
            counter_update_period_s=self.counter_update_period_s,
            thermal={f"gpu{g}": _thermal(ss) for g, ss in window.items()})
        if failed:
            r.flags.append(f"{failed} power samples failed to read and were skipped")
        why = self._untrusted(start, end) if self.has_counter else []
        if self.has_counter and not why:
            r.per_device_j = {f"gpu{g}": (end.counters[g] - start.counters[g]) / 1000.0  # type: ignore[operator]
                              for g in self.gpus}
        elif polled_total is not None:
            r.source = "nvml_power"
            r.per_device_j = {f"gpu{g}": polled[g] for g in self.gpus}  # type: ignore[misc]
            if why:
                r.flags.append(f"{'; '.join(why)}: energy is integrated polled power instead")
        else:
            r.note = "; ".join([*why, *gaps])
            return r
        r.joules = sum(r.per_device_j.values())
        return r

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with contextlib.suppress(self._nv.NVMLError):
            self._nv.nvmlShutdown()


def _thermal(samples: list[_Sample]) -> dict[str, object]:
    temps = [s.temperature_c for s in samples if s.temperature_c is not None]
    clocks = [s.sm_clock_mhz for s in samples if s.sm_clock_mhz is not None]
    mask = 0
    for s in samples:
        mask |= s.throttle
    return {
        "temperature_start_c": temps[0] if temps else None,
        "temperature_end_c": temps[-1] if temps else None,
        "temperature_max_c": max(temps) if temps else None,
        "sm_clock_mhz_min": min(clocks) if clocks else None,
        "sm_clock_mhz_max": max(clocks) if clocks else None,
        "throttle_reasons": throttle_names(mask),
    }


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
