"""Regressions of a daily campaign: change points over each series of runs.

A series is one (configuration, metric) across a campaign's runs, oldest first. Each run
contributes one value made from its cycles: the mean of the logs of its cycles (the log of
their geometric mean) for a metric that cannot be negative, whose changes are relative;
the mean of its cycles for idle-adjusted energy. Run-to-run variation is part of the
noise the test sees, because the test compares runs, not cycles: five cycles of one run
are not five independent looks at the configuration when the whole run can sit higher or
lower (temperature, a reboot, a neighbour). Change points are found over the whole
history with the E-divisive/Hunter algorithm of ``llem_core.analysis.changepoints``, so a change
is reported at the run where it happened and stays there in every later history.

Each change point carries the levels of the segments on either side (between the
neighbouring change points), the relative change with a Student t interval over the runs
of the two segments (on the log scale for a positive metric), and the test's p-value.
``DEFAULT_MAX_PVALUE`` (2e-4) and ``DEFAULT_WINDOW`` (20 runs) are chosen by simulation
(``bench/changepoint_alarms.py``, results in bench/RESULTS.md): the p-value keeps false
changes under one per campaign-month of 4 configurations x 6 metrics with the detection
re-run over the whole history every day; the window is short enough that a regression
fixed ten runs later is two change points (with Otava's 50, a window holding both edges
tests the first against everything after it, and finds neither), at little cost in how
soon a step is found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from llem_core.analysis.changepoints import change_points

DEFAULT_WINDOW = 20
DEFAULT_MAX_PVALUE = 2e-4
METHOD = ("E-divisive means, Hunter split/merge (Apache Otava's algorithm), t-test on "
          "run-level values")
CHANGE_CI = "Student t over the runs of the two segments (log scale for positive metrics)"


@dataclass(frozen=True)
class SeriesChange:
    """A change point of one series: ``index`` is the first run at the new level."""

    index: int
    level_before: float
    level_after: float
    rel_change: float | None
    rel_change_ci_low: float | None
    rel_change_ci_high: float | None
    pvalue: float
    runs_before: int
    runs_after: int


def _given(v: float | None) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def change_size(rel: float | None, low: float | None, high: float | None) -> str:
    """A relative change as people read it: "+12.3% [+8.0%, +16.9%]", "—" if unknown."""
    if not _given(rel):
        return "—"
    return f"{rel:+.1%}" + (f" [{low:+.1%}, {high:+.1%}]" if _given(low) and _given(high)
                            else "")


def run_values(cycles: Sequence[np.ndarray], positive: bool) -> np.ndarray | None:
    """One value per run (mean of log cycles, or of cycles); None where it cannot be."""
    values = []
    for c in cycles:
        c = np.asarray(c, dtype=float)
        c = c[np.isfinite(c)]
        if not c.size or (positive and np.any(c <= 0)):
            return None
        values.append(np.mean(np.log(c)) if positive else np.mean(c))
    return np.array(values)


def _relative(before: np.ndarray, after: np.ndarray, positive: bool, confidence: float
              ) -> tuple[float | None, float | None, float | None]:
    """(relative change, CI low, CI high) of ``after`` vs ``before``."""
    nb, na = before.size, after.size
    diff = float(after.mean() - before.mean())
    lo = hi = None
    if nb + na > 2 and (nb > 1 or na > 1):
        pooled = (((nb - 1) * before.var(ddof=1) if nb > 1 else 0.0)
                  + ((na - 1) * after.var(ddof=1) if na > 1 else 0.0)) / (nb + na - 2)
        half = float(sps.t.ppf(0.5 + confidence / 2, nb + na - 2)
                     * np.sqrt(pooled * (1 / nb + 1 / na)))
        lo, hi = diff - half, diff + half
    if positive:
        return (float(np.expm1(diff)), None if lo is None else float(np.expm1(lo)),
                None if hi is None else float(np.expm1(hi)))
    base = float(before.mean())
    if base <= 0:  # a relative change of a level at or below zero means nothing
        return None, None, None
    return (diff / base, None if lo is None else lo / base, None if hi is None else hi / base)


def detect_series(cycles: Sequence[np.ndarray], positive: bool, *,
                  window: int = DEFAULT_WINDOW, max_pvalue: float = DEFAULT_MAX_PVALUE,
                  confidence: float = 0.95) -> list[SeriesChange]:
    """Change points of one series given each run's cycles, oldest run first."""
    z = run_values(cycles, positive)
    if z is None or z.size < 3:
        return []
    found = change_points(z, window=window, max_pvalue=max_pvalue)
    edges = [0, *[c.index for c in found], z.size]
    out = []
    for k, c in enumerate(found):
        before, after = z[edges[k]:c.index], z[c.index:edges[k + 2]]
        rel, lo, hi = _relative(before, after, positive, confidence)
        level = (lambda v: float(np.exp(v.mean()))) if positive else \
            (lambda v: float(v.mean()))
        out.append(SeriesChange(c.index, level(before), level(after), rel, lo, hi,
                                c.pvalue, int(before.size), int(after.size)))
    return out
