"""Pure arithmetic on energy counters and power traces (unit-tested on recorded traces)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def counter_delta(start: int, end: int, modulus: int | None) -> int:
    """Increase of a monotonically increasing counter that wraps to 0 at ``modulus``.

    With no modulus (NVML's 64-bit millijoule counter never wraps in practice) a decrease
    means the counter was reset (driver reload), which is an error, not negative energy.
    """
    if end >= start:
        return end - start
    if modulus is None:
        raise ValueError(f"energy counter went backwards ({start} -> {end}): counter reset")
    return modulus - start + end


def integrate_power(times_s: Sequence[float], watts: Sequence[float]) -> float:
    """Energy in joules of a power trace sampled at (possibly irregular) times: trapezoid rule."""
    t = np.asarray(times_s, dtype=float)
    w = np.asarray(watts, dtype=float)
    if t.shape != w.shape:
        raise ValueError("times and watts differ in length")
    if t.size < 2:
        return 0.0
    if np.any(np.diff(t) < 0):
        raise ValueError("sample times must not decrease")
    return float(np.trapezoid(w, t))


def covered_energy(times_s: Sequence[float], watts: Sequence[float], start: float,
                   end: float, max_gap_s: float) -> float | None:
    """Energy of ``[start, end]`` from power samples inside it, or None where the samples
    leave a gap longer than ``max_gap_s`` (at either edge or between two samples).

    A short edge gap (an edge sample failed to read) holds the nearest sample's power up
    to the edge, as the trapezoid rule bridges a gap inside: the window is never silently
    shortened to the span its samples happen to cover.
    """
    t = list(times_s)
    if len(t) < 2 or end < start:
        return None
    edges = [t[0] - start, *np.diff(t), end - t[-1]]
    if max(edges) > max_gap_s:
        return None
    w = list(watts)
    return integrate_power([start, *t, end], [w[0], *w, w[-1]])


def baseline_adjusted(raw_j: float, baseline_w: float, window_s: float) -> float:
    """Energy above idle: the idle power is subtracted over the measured window only."""
    if window_s < 0:
        raise ValueError("window must be >= 0")
    return raw_j - baseline_w * window_s


def relative_difference(a: float, b: float) -> float | None:
    """|a - b| / max(|a|, |b|); None where both are zero."""
    denom = max(abs(a), abs(b))
    return None if denom == 0 else abs(a - b) / denom


def detect_update_period(
    read: Callable[[], int | None], clock: Callable[[], float], changes: int = 4,
    timeout_s: float = 3.0, sleep: Callable[[float], None] | None = None,
) -> float | None:
    """Learn how often a counter updates: poll until it changed ``changes`` times.

    Returns the median interval between observed changes, or None if it changed fewer than
    twice before the timeout (the interval cannot be known then). A failed read (None) is
    skipped: it is not a change.
    """
    t_start = clock()
    last = read()
    stamps: list[float] = []
    while len(stamps) < changes + 1 and clock() - t_start < timeout_s:
        value = read()
        if value is not None and last is not None and value != last:
            stamps.append(clock())
        elif sleep is not None:
            sleep(0.001)
        last = value if value is not None else last
    if len(stamps) < 2:
        return None
    return float(np.median(np.diff(stamps)))
