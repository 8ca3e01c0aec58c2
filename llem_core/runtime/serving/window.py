"""The steady-state window of a load, and the occupancy the engine held in it.

ML.ENERGY's definition for a burst of ``n`` requests on an engine of batch capacity
``max_num_seqs``: the window starts when ``max_num_seqs`` requests have their first token
and ends when ``n - max_num_seqs - 1`` requests are done (before that the batch fills,
after it drains; their ``- 1`` ends the window one completion early, so that no part of
the ramp-down is in it). Generalised to any load with a *target occupancy* ``K``
(requests decoding at once): the window runs from the K-th first token to the
(n-K-1)-th completion, whatever the arrival pattern, and needs n >= K + 2. K defaults to
``min(max_num_seqs, N)`` for a concurrency-N load and to
``min(max_num_seqs, n)`` for a burst; without a known capacity (and always for a rate load
unless ``load.target_occupancy`` is set) it is estimated as the time-weighted median of the
number of requests decoding over the whole load. A request is *decoding* from its first
token to its end. The occupancy is then measured inside the window, and a window that is
empty, too short, or rarely at K is flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llem_core.runtime.engines.base import Served
from llem_core.runtime.engines.settings import LoadSettings
from llem_core.runtime.serving.client import RequestRecord

Segment = tuple[float, float, int]  # start, end, requests decoding


def decoding_segments(records: Sequence[RequestRecord], start: float,
                      end: float) -> list[Segment]:
    """Piecewise-constant count of decoding requests over [start, end]."""
    edges: list[tuple[float, int]] = []
    for r in records:
        if r.first_token is not None and r.done is not None:
            edges += [(r.first_token, 1), (r.done, -1)]
    edges.sort()
    level = sum(d for t, d in edges if t <= start)
    out: list[Segment] = []
    t_prev = start
    for t, d in edges:
        if t <= start:
            continue
        if t >= end:
            break
        if t > t_prev:
            out.append((t_prev, t, level))
        level += d
        t_prev = t
    if end > t_prev:
        out.append((t_prev, end, level))
    return out


def time_weighted_median(segments: Sequence[Segment]) -> int:
    total = sum(b - a for a, b, _ in segments)
    acc = 0.0
    for a, b, level in sorted(segments, key=lambda s: s[2]):
        acc += b - a
        if acc >= total / 2:
            return level
    return 0


def target_occupancy(load: LoadSettings, server: Served,
                     n: int) -> tuple[int | None, str]:
    """K and where it came from; None means: estimate it from the load."""
    if load.target_occupancy is not None:
        return load.target_occupancy, "load.target_occupancy"
    if load.pattern == "rate" or server.max_num_seqs is None:
        return None, "estimated"
    cap = load.concurrency if load.pattern == "concurrency" and load.concurrency else n
    return min(server.max_num_seqs, cap), "server.max_num_seqs"


@dataclass
class SteadyWindow:
    """The steady-state window (None edges when it is empty) and its occupancy."""

    target: int
    target_source: str
    start: float | None
    end: float | None
    occupancy_mean: float | None = None
    occupancy_min: int | None = None
    occupancy_max: int | None = None
    fill_fraction: float | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (self.end - self.start) if self.start is not None and self.end is not None \
            else 0.0


def steady_window(records: Sequence[RequestRecord], target: int | None, source: str,
                  load_start: float, load_end: float, min_window_s: float,
                  min_fill_fraction: float) -> SteadyWindow:
    done = [r for r in records if r.first_token is not None and r.done is not None]
    if target is None:
        target = max(1, time_weighted_median(decoding_segments(done, load_start, load_end)))
    n = len(done)
    firsts = sorted(r.first_token for r in done if r.first_token is not None)
    ends = sorted(r.done for r in done if r.done is not None)
    last = n - target - 1  # completions that end the window (ML.ENERGY's rule)
    if target > n or last < 1:
        return SteadyWindow(target, source, None, None, flags=[
            f"no steady-state window: {n} requests cannot fill and drain a target "
            f"occupancy of {target} (needs at least {target + 2})"])
    start, end = firsts[target - 1], ends[last - 1]
    if end <= start:
        return SteadyWindow(target, source, None, None, flags=[
            f"no steady-state window: the {last}-th request finished before the "
            f"{target}-th first token (the engine never held {target} requests)"])
    w = SteadyWindow(target, source, start, end)
    segs = decoding_segments(done, start, end)
    span = end - start
    w.occupancy_mean = sum((b - a) * lv for a, b, lv in segs) / span
    w.occupancy_min = min(lv for _, _, lv in segs)
    w.occupancy_max = max(lv for _, _, lv in segs)
    w.fill_fraction = sum(b - a for a, b, lv in segs if lv >= target) / span
    if span < min_window_s:
        w.flags.append(f"steady-state window of {span:.2f} s is shorter than "
                       f"load.min_window_s={min_window_s:g} s")
    if w.occupancy_max < target:
        w.flags.append(f"the batch never filled: at most {w.occupancy_max} requests decoding "
                       f"at once, target {target}")
    elif w.fill_fraction < min_fill_fraction:
        w.flags.append(f"target occupancy {target} held only {w.fill_fraction:.0%} of the "
                       f"window (< {min_fill_fraction:.0%})")
    return w
