"""The meter used where no energy source exists: it measures nothing and says so."""

from __future__ import annotations

from llem_core.energy.base import Baseline, EnergyReading


class NullMeter:
    source = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def devices(self) -> list[str]:
        return []

    def hardware(self) -> dict[str, object]:
        return {"meter": "none", "reason": self.reason}

    def idle(self, seconds: float) -> Baseline:  # pragma: no cover - never called
        raise RuntimeError("the null meter has no baseline")

    def begin(self) -> None:
        pass

    def end(self) -> EnergyReading:  # pragma: no cover - never called
        raise RuntimeError("the null meter measures nothing")

    def close(self) -> None:
        pass
