"""llem's E-divisive/Hunter change points agree with Apache Otava and find what they must."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from llem_core.analysis.changepoints import candidate, change_points

REFERENCE = Path(__file__).parent / "data" / "otava_reference.json"


def test_same_change_points_as_otava_on_its_reference_series():
    """60 cases (steps, ramps, outliers, noise, several windows and p) from apache-otava
    0.8.0 (scripts/otava_reference.py)."""
    cases = json.loads(REFERENCE.read_text())["cases"]
    assert len(cases) == 60 and any(c["indices"] for c in cases)
    assert any(not c["indices"] for c in cases)
    for c in cases:
        got = [cp.index for cp in change_points(c["series"], c["window"], c["max_pvalue"],
                                                otava_ddof=True)]
        assert got == c["indices"], (len(c["series"]), c["window"], c["max_pvalue"])


def _q(x: np.ndarray, y: np.ndarray) -> float:
    """Matteson and James' statistic straight from its definition."""
    n, m = len(x), len(y)
    cross = sum(abs(a - b) for a in x for b in y)
    wx = sum(abs(a - b) for a, b in itertools.combinations(x, 2))
    wy = sum(abs(a - b) for a, b in itertools.combinations(y, 2))
    return (2 / (m + n) * cross - (2 * m / ((m + n) * (n - 1)) * wx if n > 1 else 0)
            - (2 * n / ((m + n) * (m - 1)) * wy if m > 1 else 0))


def test_candidate_maximises_the_energy_statistic():
    z = np.random.default_rng(1).normal(0, 1, 14)
    z[9:] += 2
    best = max(((tau, _q(z[:tau], z[tau:kappa])) for tau in range(1, 14)
                for kappa in range(tau + 1, 15)), key=lambda t: t[1])
    tau, qhat = candidate(z, 0, 14)
    assert tau == best[0] and qhat == pytest.approx(best[1])


def test_a_step_is_found_where_it_happened_with_its_levels():
    z = np.random.default_rng(2).normal(100, 2, 40)
    z[25:] *= 1.1
    [cp] = change_points(z)
    assert cp.index == 25 and cp.pvalue < 0.001
    assert cp.mean_after / cp.mean_before - 1 == pytest.approx(0.1, abs=0.02)
    assert (cp.n_before, cp.n_after) == (25, 15)


def test_noise_and_constants_have_no_change_point():
    assert change_points(np.random.default_rng(3).normal(5, 1, 60)) == []
    assert change_points(np.full(20, 7.0)) == []
    assert change_points([1.0]) == [] and change_points([]) == []


def test_bad_series_is_an_error():
    with pytest.raises(ValueError, match="finite"):
        change_points([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="window"):
        change_points([1.0, 2.0, 3.0], window=1)


def test_textbook_t_test_is_more_careful_than_otavas_on_short_pieces():
    """ddof=0 passes population standard deviations as sample ones: with 3 runs on each
    side the same split looks about 1.5 times surer than it is."""
    z = np.array([1.0, 1.2, 0.9, 2.0, 2.3, 1.8])
    [ours] = [c for c in change_points(z, max_pvalue=0.05) if c.index == 3] or [None]
    [otava] = [c for c in change_points(z, max_pvalue=0.05, otava_ddof=True)
               if c.index == 3]
    assert ours is not None and ours.pvalue > otava.pvalue
    from scipy import stats as sps

    assert ours.pvalue == pytest.approx(sps.ttest_ind(z[:3], z[3:]).pvalue)
