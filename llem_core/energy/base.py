"""The meter protocol and the measurements it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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
    """Energy over one measured window, with the evidence behind it."""

    source: str
    joules: float
    window_s: float
    per_device_j: dict[str, float] = field(default_factory=dict)
    polled_joules: float | None = None
    polled_samples: int = 0
    counter_update_period_s: float | None = None
    thermal: dict[str, object] = field(default_factory=dict)


class EnergyMeter(Protocol):
    source: str

    def devices(self) -> list[str]: ...

    def hardware(self) -> dict[str, object]: ...

    def idle(self, seconds: float) -> Baseline: ...

    def begin(self) -> None: ...

    def end(self) -> EnergyReading: ...

    def close(self) -> None: ...
