"""Measure the energy of named windows of your own code: :class:`EnergyMonitor`.

    with EnergyMonitor.open(gpus=[0]) as monitor:
        monitor.measure_idle(5)                  # optional: enables adjusted joules
        with monitor.window("generate") as w:
            model.generate(...)
        print(w.measurement.joules, w.measurement.adjusted_joules)

Windows have names and may overlap (``begin_window`` / ``end_window``). Both edges
synchronise the device first, so queued GPU work is counted in the window it was issued
in. Ending a window always returns a :class:`Measurement`: where nothing can measure
energy, ``joules`` is None and ``reason`` says why; nothing is made up.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from llem_core.runtime.energy.base import (
    Baseline,
    EnergyMeter,
    EnergyReading,
    MeterUnavailable,
    measure_idle,
)
from llem_core.runtime.energy.result import adjusted_energy, window_flags


def default_sync() -> None:
    """Wait for queued CUDA work, only if torch is already imported and CUDA initialised
    (torch is never imported just for this)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_initialized():
        return
    for index in range(cuda.device_count()):
        cuda.synchronize(index)


@dataclass
class Measurement:
    """The energy and time of one window.

    ``joules`` is the raw energy (None with ``reason`` when unmeasured), ``adjusted_joules``
    the energy above the monitor's idle baseline; ``source`` is nvml_counter, nvml_power,
    rapl or none; ``flags`` say what makes the figure less trustworthy; ``reading`` holds
    the evidence (polled power, per-GPU temperatures, clocks and throttling).
    """

    name: str
    seconds: float
    source: str
    joules: float | None
    adjusted_joules: float | None = None
    baseline_w: float | None = None
    per_device_j: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    reason: str | None = None
    reading: EnergyReading | None = None


class _Window:
    """Handle of a ``with monitor.window(name)`` block; ``measurement`` is set on exit."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.measurement: Measurement | None = None


class EnergyMonitor:
    """Named, possibly overlapping energy windows over one meter.

    ``sync`` is called at both edges of every window (default: :func:`default_sync`).
    """

    def __init__(self, meter: EnergyMeter, *, baseline: Baseline | None = None,
                 sync: Callable[[], None] | None = default_sync) -> None:
        self.meter = meter
        self.baseline = baseline
        self._sync = sync or (lambda: None)
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, meter: str = "auto", gpus: Sequence[int] = (0,), *,
             on_gpu: bool | None = None, poll_interval_s: float = 0.1,
             sync: Callable[[], None] | None = default_sync) -> EnergyMonitor:
        """A monitor over the meter ``meter`` (auto | nvml | rapl | none) of ``gpus``.

        auto falls back to the null meter (every window then says why it has no energy);
        nvml and rapl raise MeterUnavailable when they cannot run.
        """
        from llem_core.campaign.config import EnergyConfig
        from llem_core.runtime.energy.select import open_meter

        cfg = EnergyConfig(meter=meter, poll_interval_s=poll_interval_s)
        return cls(open_meter(cfg, list(gpus), on_gpu), sync=sync)

    @property
    def source(self) -> str:
        return self.meter.source

    def hardware(self) -> dict[str, object]:
        return self.meter.hardware()

    def measure_idle(self, seconds: float) -> Baseline | None:
        """Measure idle power now and subtract it from later windows' adjusted joules.

        None when the meter cannot measure (the windows then say why).
        """
        self._sync()
        try:
            self.baseline = measure_idle(self.meter, seconds)
        except MeterUnavailable:
            self.baseline = None
        return self.baseline

    def begin_window(self, name: str) -> None:
        with self._lock:
            if name in self._open:
                raise ValueError(f"window {name!r} is already open")
            self._open[name] = None
        self._sync()
        mark = self.meter.mark()
        with self._lock:
            self._open[name] = mark

    def end_window(self, name: str) -> Measurement:
        with self._lock:
            if self._open.get(name) is None:
                raise ValueError(f"window {name!r} is not open")
        self._sync()
        end = self.meter.mark()
        with self._lock:
            start = self._open.pop(name)
        return self.measurement(name, self.meter.reading(start, end))

    @contextmanager
    def window(self, name: str) -> Iterator[_Window]:
        handle = _Window(name)
        self.begin_window(name)
        try:
            yield handle
        finally:
            handle.measurement = self.end_window(name)

    def measurement(self, name: str, reading: EnergyReading) -> Measurement:
        adjusted = adjusted_energy(reading, self.baseline)
        return Measurement(
            name=name, seconds=reading.window_s, source=reading.source, joules=reading.joules,
            adjusted_joules=adjusted,
            baseline_w=self.baseline.watts if self.baseline is not None else None,
            per_device_j=dict(reading.per_device_j), flags=window_flags(reading, adjusted),
            reason=reading.note if reading.joules is None else None, reading=reading)

    def close(self) -> None:
        self.meter.close()

    def __enter__(self) -> EnergyMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
