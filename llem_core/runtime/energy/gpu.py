"""GPU energy through the device layer (:mod:`llem_core.runtime.devices`), whatever library
reads it.

The primary figure is the device's total-energy counter (millijoules since driver load;
NVML on Volta and newer). From the moment the meter opens until it closes, a thread polls
power at the configured interval, both as the fallback where there is no counter and as a
cross-check of the counter; temperature, SM clock and throttle reasons are sampled with it.
A window is the span between two marks, so windows may overlap. The meter's source is the
device library's kind with ``_counter`` or ``_power`` (``nvml_counter``).

A sensor read that fails never becomes a number: a counter read is retried a few times,
and a window whose counter cannot be trusted at either edge is measured by integrating
the polled power instead (and flagged); a failed power sample is skipped and counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from llem_core.runtime.devices import Device, DeviceError, GpuDevices
from llem_core.runtime.energy.base import EnergyReading, MeterUnavailable
from llem_core.runtime.energy.trace import covered_energy, detect_update_period

T = TypeVar("T")

COUNTER_TRIES = 3
COUNTER_RETRY_S = 0.02
# Polled power bridges a gap of failed samples up to this long (polls, or seconds if more);
# a longer one leaves the window without a polled energy.
MAX_GAP_POLLS = 5
MAX_GAP_MIN_S = 0.5


@dataclass(slots=True)
class _Sample:
    t: float
    watts: float | None
    temperature_c: float | None
    sm_clock_mhz: float | None
    throttle: list[str]


@dataclass
class GpuMark:
    """One window edge: when, each GPU's counter (None: unreadable) and failed attempts."""

    t: float
    counters: dict[int, int | None] = field(default_factory=dict)
    failed_reads: int = 0


class GpuMeter:
    """Meters the GPUs given by index, as ``devices`` numbers them in this process; the
    meter owns ``devices`` and closes them."""

    def __init__(self, devices: GpuDevices, gpus: list[int],
                 poll_interval_s: float = 0.1) -> None:
        self._devices = devices
        try:
            count = devices.count()
            missing = [g for g in gpus if g >= count]
            if not gpus or missing:
                raise MeterUnavailable(f"GPU index {missing or gpus} not present "
                                       f"({count} GPUs seen)")
            self._gpus = {g: devices.device(g) for g in gpus}
        except (MeterUnavailable, DeviceError) as exc:
            devices.close()
            raise MeterUnavailable(str(exc)) from exc
        self.gpus = list(gpus)
        self.poll_interval_s = poll_interval_s
        self.has_counter = all(self._counter(d)[0] is not None for d in self._gpus.values())
        self.source = f"{devices.kind}_counter" if self.has_counter else f"{devices.kind}_power"
        self._power_source = f"{devices.kind}_power"
        self.counter_update_period_s: float | None = None
        first = self._gpus[self.gpus[0]]
        if self.has_counter:
            self.counter_update_period_s = detect_update_period(
                lambda: self._counter_once(first), time.monotonic, sleep=time.sleep)
        self._instant_ok = first.power_is_instant()
        self._lock = threading.Lock()
        self._samples: dict[int, list[_Sample]] = {g: [] for g in self.gpus}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="llem-gpu-poll", daemon=True)
        self._thread.start()

    # -- raw reads -------------------------------------------------------------------------
    @staticmethod
    def _counter_once(device: Device) -> int | None:
        try:
            value = device.energy_mj()
        except DeviceError:
            return None
        # The counter runs since the driver loaded: a 0 is a failed read, not a value.
        return value if value > 0 else None

    def _counter(self, device: Device) -> tuple[int | None, int]:
        """The counter after up to COUNTER_TRIES attempts, and how many attempts failed."""
        for attempt in range(COUNTER_TRIES):
            value = self._counter_once(device)
            if value is not None:
                return value, attempt
            if attempt + 1 < COUNTER_TRIES:
                time.sleep(COUNTER_RETRY_S)
        return None, COUNTER_TRIES

    @staticmethod
    def _optional(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except DeviceError:
            return None

    def _sample(self) -> float:
        with self._lock:
            now = time.monotonic()
            for g, d in self._gpus.items():
                self._samples[g].append(_Sample(
                    now, self._optional(d.power_w), self._optional(d.temperature_c),
                    self._optional(d.sm_clock_mhz), self._optional(d.throttle_reasons) or []))
        return now

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.poll_interval_s)

    # -- protocol --------------------------------------------------------------------------
    def hardware(self) -> dict[str, object]:
        info: dict[str, object] = {"meter": self.source, "gpus": []}
        info.update(self._devices.driver())
        info["gpus"] = [self._describe(g, d) for g, d in self._gpus.items()]
        info["counter_update_period_s"] = self.counter_update_period_s
        info["instant_power_field"] = self._instant_ok
        return info

    def _describe(self, index: int, device: Device) -> dict[str, object]:
        """One GPU for provenance: what could not be read is left out."""
        gpu: dict[str, object] = {"index": index, "name": device.name()}
        memory = self._optional(device.memory)
        reads = {"uuid": self._optional(device.uuid),
                 "memory_total_bytes": memory and memory.total_bytes,
                 "power_limit_w": self._optional(device.power_limit_w)}
        gpu.update({k: v for k, v in reads.items() if v is not None})
        return gpu

    def mark(self) -> GpuMark:
        mark = GpuMark(t=self._sample())
        if self.has_counter:
            for g, d in self._gpus.items():
                mark.counters[g], failed = self._counter(d)
                mark.failed_reads += failed
        return mark

    def _untrusted(self, start: GpuMark, end: GpuMark) -> list[str]:
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

    def reading(self, start: GpuMark, end: GpuMark) -> EnergyReading:
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
            r.source = self._power_source
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
        self._devices.close()


def _thermal(samples: list[_Sample]) -> dict[str, object]:
    temps = [s.temperature_c for s in samples if s.temperature_c is not None]
    clocks = [s.sm_clock_mhz for s in samples if s.sm_clock_mhz is not None]
    # every reason seen in the window, in the order first seen
    reasons = list(dict.fromkeys(name for s in samples for name in s.throttle))
    return {
        "temperature_start_c": temps[0] if temps else None,
        "temperature_end_c": temps[-1] if temps else None,
        "temperature_max_c": max(temps) if temps else None,
        "sm_clock_mhz_min": min(clocks) if clocks else None,
        "sm_clock_mhz_max": max(clocks) if clocks else None,
        "throttle_reasons": reasons,
    }
