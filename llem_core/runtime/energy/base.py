"""The meter protocol and the measurements it returns.

A meter runs from the moment it opens until it closes; a window is the span between two
:meth:`EnergyMeter.mark` calls, so any number of windows may overlap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class MeterUnavailable(RuntimeError):
    """The meter asked for cannot run here (no GPU, no NVML, RAPL unreadable)."""


@dataclass
class Baseline:
    """Idle power measured before the model is loaded."""

    watts: float
    seconds: float
    source: str
    per_device_w: dict[str, float] = field(default_factory=dict)
    temperature_c: float | None = None


@dataclass
class EnergyReading:
    """Energy over one window, with the evidence behind it.

    ``joules`` is None (with ``note`` saying why) when nothing trustworthy measured it: a
    failed sensor read never becomes a number.
    """

    source: str
    joules: float | None
    window_s: float
    per_device_j: dict[str, float] = field(default_factory=dict)
    polled_joules: float | None = None
    polled_samples: int = 0
    failed_samples: int = 0
    counter_failed_reads: int = 0
    counter_update_period_s: float | None = None
    thermal: dict[str, object] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    note: str | None = None


class EnergyMeter(Protocol):
    source: str

    def hardware(self) -> dict[str, object]: ...

    def mark(self) -> Any:
        """A snapshot of the meter at one edge of a window."""
        ...

    def reading(self, start: Any, end: Any) -> EnergyReading:
        """Energy between two marks taken by this meter."""
        ...

    def close(self) -> None: ...


def measure_idle(meter: EnergyMeter, seconds: float,
                 sleep: Callable[[float], None] = time.sleep) -> Baseline:
    """Idle power: the energy of a window of doing nothing, divided by its length.

    Raises MeterUnavailable when the meter could not measure that window at all.
    """
    start = meter.mark()
    sleep(seconds)
    r = meter.reading(start, meter.mark())
    if r.joules is None or r.window_s <= 0:
        raise MeterUnavailable(f"idle baseline not measurable: {r.note or 'empty window'}")
    if r.joules <= 0:  # a powered device never idles at 0 W: the counter did not advance
        raise MeterUnavailable(f"idle baseline not measurable: {r.source} read {r.joules} J "
                               f"over {r.window_s:.3f} s (shorter than its update period?)")
    return Baseline(watts=r.joules / r.window_s, seconds=r.window_s, source=r.source,
                    per_device_w={k: v / r.window_s for k, v in r.per_device_j.items()})
