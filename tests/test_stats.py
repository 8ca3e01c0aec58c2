"""Statistics against independent calculations, and the edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from llem_core.stats import CIOptions, compare, drift, mean_ci, pareto_front, summarise


def frame(values: dict[str, list[float]], metric: str = "tokens_per_s") -> pd.DataFrame:
    rows = []
    pos = 0
    for name, vals in values.items():
        for cycle, v in enumerate(vals, start=1):
            rows.append({"config_name": name, "cycle": cycle, "position": pos, metric: v,
                         "status": "success"})
            pos += 1
    return pd.DataFrame(rows)


def test_bootstrap_agrees_with_t_interval_on_normal_sample():
    x = np.random.default_rng(42).normal(100.0, 5.0, size=40)
    [(lo, hi, method)] = mean_ci([x], CIOptions(n_resamples=9999))
    t_lo, t_hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert method == "BCa"
    width = t_hi - t_lo
    assert abs(lo - t_lo) < 0.1 * width and abs(hi - t_hi) < 0.1 * width


def test_known_answer_constant_and_symmetric():
    [(lo, hi, m)] = mean_ci([np.array([3.0, 3.0, 3.0, 3.0])], CIOptions())
    assert (lo, hi, m) == (3.0, 3.0, "constant")
    # two values: the bootstrap distribution of the mean is {a, (a+b)/2, b}
    [(lo, hi, _)] = mean_ci([np.array([1.0, 3.0])], CIOptions(method="percentile"))
    assert lo == pytest.approx(1.0) and hi == pytest.approx(3.0)


def test_seeded_and_vectorised_equal_single():
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=8) for _ in range(5)]
    a = mean_ci(xs, CIOptions(seed=3))
    b = mean_ci(xs, CIOptions(seed=3))
    assert a == b
    single = mean_ci([xs[0]], CIOptions(seed=3))[0]
    assert single[0] == pytest.approx(a[0][0], rel=0.05)


def test_summarise_edge_cases():
    df = frame({"one": [10.0], "two": [10.0, 12.0], "five": [1, 2, 3, 4, 5],
                "nan": [1.0, np.nan, 3.0, 2.0, 2.5, 2.2]})
    df.loc[len(df)] = {"config_name": "five", "cycle": 6, "position": 99,
                       "tokens_per_s": 1000.0, "status": "failed"}
    s = summarise(df, metrics=("tokens_per_s",)).set_index("config_name")
    assert np.isnan(s.loc["one", "ci_low"]) and "no confidence interval" in s.loc["one", "note"]
    assert s.loc["two", "n"] == 2 and "unreliable" in s.loc["two", "note"]
    assert s.loc["five", "n"] == 5 and s.loc["five", "mean"] == pytest.approx(3.0)
    assert s.loc["nan", "n"] == 5 and "1 missing" in s.loc["nan", "note"]
    assert s.loc["five", "ci_low"] <= 3.0 <= s.loc["five", "ci_high"]


def test_paired_comparison_detects_real_difference():
    rng = np.random.default_rng(0)
    drift_ = np.linspace(0, 20, 8)  # shared drift: pairing by cycle removes it
    ref = 100 + drift_ + rng.normal(0, 0.5, 8)
    fast = 1.5 * (100 + drift_) + rng.normal(0, 0.5, 8)
    same = 100 + drift_ + rng.normal(0, 0.5, 8)
    c = compare(frame({"ref": ref.tolist(), "fast": fast.tolist(), "same": same.tolist()}),
                metrics=("tokens_per_s",)).set_index("config_name")
    assert c.loc["fast", "reference"] == "ref"
    assert c.loc["fast", "excludes_zero"]
    assert c.loc["fast", "ratio_ci_low"] < 1.5 * 1.0 < 1.6 < c.loc["fast", "ratio_ci_high"] + 0.2
    assert c.loc["fast", "diff_ci_low"] > 40
    assert not c.loc["same", "excludes_zero"]


def test_compare_unknown_reference():
    with pytest.raises(ValueError, match="not in the results"):
        compare(frame({"a": [1, 2]}), reference="zzz")


def test_drift_detection_on_synthetic_trend():
    rng = np.random.default_rng(0)
    df = frame({"warming": (np.arange(10) * 5 + rng.normal(0, 1, 10)).tolist(),
                "steady": rng.normal(50, 1, 10).tolist()}, metric="energy_raw_j")
    d = drift(df, metrics=("energy_raw_j",)).set_index("config_name")
    assert d.loc["warming", "drifted"] and d.loc["warming", "spearman_rho"] > 0.9
    assert not d.loc["steady", "drifted"]


def test_pareto_front_known_answer():
    pts = pd.DataFrame({"j": [1.0, 2.0, 1.5, 3.0], "tps": [10.0, 30.0, 5.0, 20.0]},
                       index=["a", "b", "c", "d"])
    # c is dominated by a (less energy, more speed); d by b
    assert pareto_front(pts, "j", "tps", maximise_other=True) == ["a", "b"]
    assert pareto_front(pts, "j", "tps", maximise_other=False) == ["a", "c"]
