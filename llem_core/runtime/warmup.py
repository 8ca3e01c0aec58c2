"""Warm-up until the latency settles: a fixed count, optionally extended until the
coefficient of variation of the last few runs' latencies falls below a threshold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class WarmupReport:
    runs: int
    durations_s: list[float] = field(default_factory=list)
    final_cv: float | None = None
    converged: bool | None = None


def coefficient_of_variation(values: list[float]) -> float | None:
    a = np.asarray(values, dtype=float)
    if a.size < 2 or a.mean() == 0:
        return None
    return float(a.std(ddof=1) / a.mean())


def warm_up(run_once: Callable[[], float], min_runs: int, cv_threshold: float | None = None,
            window: int = 3, max_runs: int = 20) -> WarmupReport:
    """Call ``run_once`` (returning its duration) at least ``min_runs`` times; with a
    threshold, continue until the CV of the last ``window`` durations is below it, capped
    at ``max_runs``. ``converged`` is None when no threshold was asked for."""
    durations: list[float] = []
    for _ in range(min_runs):
        durations.append(run_once())
    if cv_threshold is None:
        return WarmupReport(runs=len(durations), durations_s=durations)
    cv = coefficient_of_variation(durations[-window:]) if len(durations) >= window else None
    while (cv is None or cv > cv_threshold) and len(durations) < max_runs:
        durations.append(run_once())
        if len(durations) >= window:
            cv = coefficient_of_variation(durations[-window:])
    return WarmupReport(runs=len(durations), durations_s=durations, final_cv=cv,
                        converged=cv is not None and cv <= cv_threshold)
