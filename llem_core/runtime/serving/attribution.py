"""Energy per request under continuous batching, and the meter marks it is computed from.

During the load a thread takes a meter mark every ``load.energy_interval_s``. The energy of
each interval between two consecutive marks is given to the requests that produced tokens in
it, in proportion to the tokens each produced there (a token is timed when the client received
the chunk that carried it). An interval in which no token arrived is shared equally by the
requests in flight in it (prefill, queueing); one with no request in flight is left
*unattributed*. The parts plus the unattributed energy sum to the energy of the intervals.

Limits: the meter measures the whole device (or package), so idle and engine overhead are
shared too (the adjusted figures subtract a baseline first); a prefill's energy lands on
the requests decoding in its interval, not on the request being prefilled; the resolution
is the interval length, and token times are the client's, delayed by the network and the
engine's streaming.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llem_core.runtime.energy.base import EnergyMeter
from llem_core.runtime.serving.client import RequestRecord


class MarkSampler:
    """Meter marks taken every ``interval_s`` from start() to stop(), with their times."""

    def __init__(self, meter: EnergyMeter, interval_s: float) -> None:
        self.meter = meter
        self.interval_s = interval_s
        self.marks: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llem-serve-marks", daemon=True)

    def _take(self) -> None:
        mark = self.meter.mark()
        self.marks.append((time.monotonic(), mark))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take()

    def start(self) -> None:
        self._take()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._take()


@dataclass
class Attribution:
    """Joules per request (by record index) and what no request was active to take."""

    per_request_j: list[float]
    unattributed_j: float
    intervals: int
    flags: list[str] = field(default_factory=list)

    @property
    def total_j(self) -> float:
        return math.fsum(self.per_request_j) + self.unattributed_j


def attribute(bounds: Sequence[tuple[float, float]], joules: Sequence[float],
              records: Sequence[RequestRecord]) -> Attribution:
    """Share each interval's energy among requests by the tokens they produced in it."""
    per = [0.0] * len(records)
    unattributed = 0.0
    times = [r.token_times for r in records]
    for (a, b), e in zip(bounds, joules, strict=True):
        counts = {i: bisect.bisect_right(t, b) - bisect.bisect_right(t, a)
                  for i, t in enumerate(times)}
        counts = {i: c for i, c in counts.items() if c > 0}
        if not counts:
            counts = {i: 1 for i, r in enumerate(records)
                      if r.submitted < b and (r.done is None or r.done > a)}
        if not counts:
            unattributed += e
            continue
        total = sum(counts.values())
        keys = list(counts)
        given = 0.0
        for i in keys[:-1]:
            share = e * counts[i] / total
            per[i] += share
            given += share
        per[keys[-1]] += e - given  # the remainder: the interval's parts sum to e
    return Attribution(per, unattributed, len(bounds))


def snap(marks: Sequence[tuple[float, Any]], start: float, end: float) -> tuple[int, int] | None:
    """Indices of the first mark at or after ``start`` and the last at or before ``end``."""
    ts = [t for t, _ in marks]
    i0 = bisect.bisect_left(ts, start)
    i1 = bisect.bisect_right(ts, end) - 1
    return (i0, i1) if i0 < i1 else None


def window_attribution(meter: EnergyMeter, marks: Sequence[tuple[float, Any]], i0: int,
                       i1: int, records: Sequence[RequestRecord]) -> Attribution | str:
    """Attribution over marks i0..i1, or why it cannot be made (an unmeasured interval)."""
    bounds, joules = [], []
    for k in range(i0, i1):
        r = meter.reading(marks[k][1], marks[k + 1][1])
        if r.joules is None:
            return f"interval energy unmeasured: {r.note or 'no reading'}"
        bounds.append((marks[k][0], marks[k + 1][0]))
        joules.append(r.joules)
    return attribute(bounds, joules, records)
