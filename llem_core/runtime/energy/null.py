"""The meter used where no energy source exists: it measures nothing and says so."""

from __future__ import annotations

import time

from llem_core.runtime.energy.base import EnergyReading


class NullMeter:
    source = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def hardware(self) -> dict[str, object]:
        return {"meter": "none", "reason": self.reason}

    def mark(self) -> float:
        return time.monotonic()

    def reading(self, start: float, end: float) -> EnergyReading:
        """Never raises: a window is still timed, its energy is null with the reason."""
        return EnergyReading(source="none", joules=None, window_s=end - start, note=self.reason)

    def close(self) -> None:
        pass
