"""Change points of a series of runs: E-divisive means with Hunter's split and merge.

The algorithm is the one Apache Otava (formerly Hunter; Fleming et al., "Hunter: Using
Change Point Detection to Hunt for Performance Regressions", ICPE 2023) runs in CI at
MongoDB and DataStax, written here on numpy/scipy (Otava itself pins numpy and pulls in
BigQuery, Slack and PostgreSQL clients):

1. *Candidate.* Within an interval, the split ``tau`` that maximises the energy
   statistic of Matteson and James (2014),
   ``Q(X, Y) = 2/(m+n) sum|X_i - Y_j| - 2m/((m+n)(n-1)) sum_{i<k}|X_i - X_k|
   - 2n/((m+n)(m-1)) sum_{j<k}|Y_j - Y_k|``, over ``X = z[start:tau]`` and every
   ``Y = z[tau:kappa]``.
2. *Split.* Windows of ``window`` points, half a window apart: in each, candidates are
   kept while a two-sample t-test between the pieces they separate has p below a
   relaxed threshold (10x, Otava's first pass), the "weak" change points.
3. *Merge.* The weakest change point (largest p, tested between its neighbouring change
   points) is removed until every remaining one has p <= ``max_pvalue``. The kept points
   are then tested once more between their final neighbours, so that every reported
   p-value and level is of the segments as they stand.

``tests/test_changepoints.py`` checks this against Otava's own output on the same series
(``tests/data/otava_reference.json``, made by ``scripts/otava_reference.py`` with the
``apache-otava`` package), run with Otava's t-test (``otava_ddof=True``: it takes each
piece's standard deviation with ``ddof=0``, which overstates the evidence of short pieces).
llem's own default is the textbook Student t-test (``ddof=1``); the thresholds in
:mod:`llem_core.analysis.regression` were chosen by simulation with it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

FIRST_PASS_FACTOR = 10.0


@dataclass(frozen=True)
class Split:
    """A tested change point: the index of the first value after it, and both sides."""

    index: int
    qhat: float
    pvalue: float
    mean_before: float
    mean_after: float
    std_before: float
    std_after: float
    n_before: int
    n_after: int

    def magnitude(self) -> float:
        """Otava's size of a change: the larger relative change, forward or backward."""
        forward = self.mean_after / self.mean_before - 1.0 if self.mean_before else 0.0
        backward = self.mean_before / self.mean_after - 1.0 if self.mean_after else 0.0
        return max(abs(forward), abs(backward))


def _block(prefix: np.ndarray, r0: np.ndarray | int, r1: np.ndarray | int,
           c0: np.ndarray | int, c1: np.ndarray | int) -> np.ndarray:
    """Sum of distances[r0:r1, c0:c1] from a 2-D prefix sum (broadcasts)."""
    return prefix[r1, c1] - prefix[r0, c1] - prefix[r1, c0] + prefix[r0, c0]


def candidate(z: np.ndarray, start: int, end: int) -> tuple[int, float] | None:
    """(tau, qhat) maximising Q over start < tau < kappa <= end; None below 2 points."""
    if end - start < 2:
        return None
    w = z[start:end]
    dist = np.abs(w[:, None] - w[None, :])
    prefix = np.zeros((w.size + 1, w.size + 1))
    prefix[1:, 1:] = dist.cumsum(0).cumsum(1)
    tau = np.arange(1, w.size)[:, None]  # X = w[0:tau]
    kappa = np.arange(2, w.size + 1)[None, :]  # Y = w[tau:kappa]
    valid = kappa > tau
    tau_b, kappa_b = np.broadcast_arrays(tau, kappa)
    n, m = tau_b.astype(float), (kappa_b - tau_b).astype(float)
    cross = _block(prefix, 0, tau_b, tau_b, np.maximum(kappa_b, tau_b))
    within_x = _block(prefix, 0, tau_b, 0, tau_b) / 2.0
    within_y = _block(prefix, tau_b, np.maximum(kappa_b, tau_b), tau_b,
                      np.maximum(kappa_b, tau_b)) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        coef_x = np.where(n > 1, 2.0 * m / ((m + n) * (n - 1)), 0.0)
        coef_y = np.where(m > 1, 2.0 * n / ((m + n) * (m - 1)), 0.0)
        q = 2.0 / (m + n) * cross - coef_x * within_x - coef_y * within_y
    q = np.where(valid, q, -np.inf)
    i, j = np.unravel_index(int(np.argmax(q)), q.shape)
    return int(tau[i, 0]) + start, float(q[i, j])


def ttest(z: np.ndarray, left: slice, right: slice, index: int, qhat: float,
          ddof: int = 1) -> Split:
    """Two-sided Student t-test between two pieces. ``ddof=0`` is Otava's (it passes
    population standard deviations where scipy expects sample ones, which makes small
    pieces look surer than they are); llem uses the textbook ``ddof=1``."""
    a, b = z[left], z[right]
    ma, mb = float(np.mean(a)), float(np.mean(b))
    sa = float(np.std(a, ddof=ddof)) if a.size >= 2 else 0.0
    sb = float(np.std(b, ddof=ddof)) if b.size >= 2 else 0.0
    p = 1.0
    if a.size + b.size > 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            _, p = sps.ttest_ind_from_stats(ma, sa, a.size, mb, sb, b.size)
        p = 1.0 if not np.isfinite(p) else float(p)
    return Split(index, qhat, p, ma, mb, sa, sb, int(a.size), int(b.size))


def _pieces(indices: list[int], start: int, end: int) -> list[tuple[int, int]]:
    edges = [start, *indices, end]
    return [(a, b) for a, b in itertools.pairwise(edges) if a != b]


def _test_at(z: np.ndarray, index: int, qhat: float, cuts: list[int], start: int,
             end: int, ddof: int) -> Split:
    """Test ``index`` between the neighbouring cuts (an existing cut or a new one)."""
    others = [c for c in cuts if c != index]
    before = max([start, *[c for c in others if c < index]])
    after = min([end, *[c for c in others if c > index]])
    return ttest(z, slice(before, index), slice(index, after), index, qhat, ddof)


def divisive(z: np.ndarray, start: int, end: int, max_pvalue: float,
             ddof: int = 1) -> list[Split]:
    """Matteson and James' recursion on z[start:end] with the t-test as the stop rule."""
    cuts: list[Split] = []
    while True:
        pieces = _pieces([c.index for c in cuts], start, end)
        found = [c for a, b in pieces if b - a > 1 and (c := candidate(z, a, b)) is not None]
        if not found:
            return cuts
        index, qhat = max(found, key=lambda c: c[1])
        cut = _test_at(z, index, qhat, [c.index for c in cuts], start, end, ddof)
        if cut.pvalue > max_pvalue:
            return cuts
        cuts = sorted([*cuts, cut], key=lambda c: c.index)


def split(z: np.ndarray, window: int, max_pvalue: float, ddof: int = 1) -> list[Split]:
    """Weak change points: the recursion in windows of ``window``, half a window apart."""
    if window < 2:
        raise ValueError("window must be at least 2")
    step = window // 2
    found: dict[int, Split] = {}
    start = 0
    while start < z.size:
        end = min(start + window, z.size)
        new = divisive(z, start, end, max_pvalue, ddof)
        for c in new:
            found.setdefault(c.index, c)
        start = max(new[-1].index if new else 0, start + step)
    indices = sorted(found)
    return [_test_at(z, i, found[i].qhat, indices, 0, z.size, ddof) for i in indices]


def merge(z: np.ndarray, weak: list[Split], max_pvalue: float,
          min_magnitude: float = 0.0, ddof: int = 1) -> list[Split]:
    """Remove the weakest change point until all have p <= max_pvalue (and, where
    ``min_magnitude`` > 0, a relative change above it); neighbours are re-tested."""
    cuts = list(weak)
    while cuts:
        weakest = max(cuts, key=lambda c: c.pvalue)
        if weakest.pvalue < max_pvalue:
            if min_magnitude <= 0:
                return cuts
            weakest = min(cuts, key=lambda c: c.magnitude())
            if weakest.magnitude() > min_magnitude:
                return cuts
        at = cuts.index(weakest)
        del cuts[at]
        indices = [c.index for c in cuts]
        # Otava re-tests the two points from the removed one's position on (its right
        # neighbour and the next); the left neighbour keeps its p until the final
        # re-test in ``change_points``, which this order of removals depends on.
        for k in (at, at + 1):
            if k < len(cuts):
                cuts[k] = _test_at(z, cuts[k].index, cuts[k].qhat, indices, 0, z.size, ddof)
    return cuts


def change_points(values: np.ndarray | list[float], window: int = 50,
                  max_pvalue: float = 0.001, min_magnitude: float = 0.0, *,
                  otava_ddof: bool = False) -> list[Split]:
    """Otava's ``compute_change_points``: split with the relaxed p, then merge.

    ``otava_ddof``: test with Otava's population standard deviations (``ddof=0``), which
    reproduces its output exactly; the default is the textbook t-test (``ddof=1``).
    """
    ddof = 0 if otava_ddof else 1
    z = np.asarray(values, dtype=float)
    if z.ndim != 1 or not np.all(np.isfinite(z)):
        raise ValueError("change points need a one-dimensional series of finite numbers")
    first = max_pvalue * FIRST_PASS_FACTOR if max_pvalue < 0.05 else (
        max_pvalue * 2 if max_pvalue < 0.5 else max_pvalue)
    kept = merge(z, split(z, window, first, ddof), max_pvalue, min_magnitude, ddof)
    indices = [c.index for c in kept]
    return [_test_at(z, c.index, c.qhat, indices, 0, z.size, ddof) for c in kept]
