"""Statistics against independent calculations, and the edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from llem_core.analysis.stats import CIOptions, compare, drift, mean_ci, pareto_front, summarise


def frame(values: dict[str, list[float]], metric: str = "tokens_per_s",
          campaign: str = "c", run_id: str = "r1") -> pd.DataFrame:
    rows = []
    pos = 0
    for name, vals in values.items():
        for cycle, v in enumerate(vals, start=1):
            rows.append({"campaign": campaign, "run_id": run_id, "config_name": name,
                         "config_hash": f"h-{name}", "cycle": cycle, "position": pos,
                         metric: v, "status": "success"})
            pos += 1
    return pd.DataFrame(rows)


def test_default_interval_is_student_t():
    x = np.random.default_rng(42).normal(100.0, 5.0, size=7)
    [(lo, hi, method)] = mean_ci([x])
    t_lo, t_hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert method == "t"
    assert (lo, hi) == pytest.approx((t_lo, t_hi), rel=1e-12)


def test_bootstrap_option_agrees_with_t_at_large_n():
    x = np.random.default_rng(42).normal(100.0, 5.0, size=40)
    [(lo, hi, method)] = mean_ci([x], CIOptions(method="BCa", n_resamples=9999))
    t_lo, t_hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert method == "BCa"
    width = t_hi - t_lo
    assert abs(lo - t_lo) < 0.1 * width and abs(hi - t_hi) < 0.1 * width


def test_known_answer_constant_single_and_two_values():
    [(lo, hi, m)] = mean_ci([np.array([3.0, 3.0, 3.0, 3.0])])
    assert (lo, hi, m) == (3.0, 3.0, "constant")
    [(lo, hi, m)] = mean_ci([np.array([3.0])])
    assert np.isnan(lo) and np.isnan(hi) and m == "none"
    # two values 1 and 3: mean 2, s/sqrt(2) = 1, t_{1,0.975} = 12.706
    [(lo, hi, _)] = mean_ci([np.array([1.0, 3.0])])
    assert lo == pytest.approx(2 - 12.7062, abs=1e-3) and hi == pytest.approx(2 + 12.7062,
                                                                            abs=1e-3)


def test_vectorised_equals_single():
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=n) for n in (8, 8, 3, 8, 5)]
    together = mean_ci(xs)
    assert together == [mean_ci([x])[0] for x in xs]


def test_coverage_at_three_cycles_on_normal_data():
    """The 95 % interval of the mean covers >= 90 % at n = 3 (the old bootstrap: ~72 %)."""
    rng = np.random.default_rng(7)
    data = rng.normal(10.0, 2.0, size=(400, 3))
    cis = mean_ci(list(data))
    covered = np.mean([lo <= 10.0 <= hi for lo, hi, _ in cis])
    assert covered >= 0.90


def test_summarise_edge_cases():
    df = frame({"one": [10.0], "two": [10.0, 12.0], "five": [1, 2, 3, 4, 5],
                "nan": [1.0, np.nan, 3.0, 2.0, 2.5, 2.2]})
    df.loc[len(df)] = {"campaign": "c", "run_id": "r1", "config_name": "five",
                       "config_hash": "h-five", "cycle": 6, "position": 99,
                       "tokens_per_s": 1000.0, "status": "failed"}
    s = summarise(df, metrics=("tokens_per_s",)).set_index("config_label")
    assert np.isnan(s.loc["one", "ci_low"]) and "too few cycles" in s.loc["one", "note"]
    assert s.loc["one", "ci_method"] == "none" and s.loc["one", "n"] == 1
    assert s.loc["two", "n"] == 2 and "not publishable" in s.loc["two", "note"]
    assert not s.loc["two", "publishable"] and s.loc["five", "publishable"]
    assert s.loc["two", "ci_method"] == "log-t"
    assert s.loc["five", "n"] == 5 and s.loc["five", "arith_mean"] == pytest.approx(3.0)
    assert s.loc["five", "mean"] == pytest.approx(120 ** 0.2)  # geometric mean
    assert s.loc["nan", "n"] == 5 and "1 missing" in s.loc["nan", "note"]
    assert s.loc["five", "ci_low"] <= 3.0 <= s.loc["five", "ci_high"]
    assert s.loc["five", "config_hash"] == "h-five" and s.loc["five", "campaign"] == "c"


def test_same_name_in_two_campaigns_stays_two_rows():
    df = pd.concat([frame({"base": [1.0, 2.0, 3.0]}, campaign="a"),
                    frame({"base": [10.0, 11.0, 12.0]}, campaign="b")])
    df["config_hash"] = df["campaign"] + "-hash"
    s = summarise(df, metrics=("tokens_per_s",)).set_index("config_label")
    assert set(s.index) == {"a/base", "b/base"}
    assert s.loc["a/base", "arith_mean"] == pytest.approx(2.0)
    assert s.loc["b/base", "arith_mean"] == pytest.approx(11.0)


def test_paired_comparison_against_independent_paired_t():
    rng = np.random.default_rng(0)
    drift_ = np.linspace(0, 20, 8)  # shared drift: pairing by cycle removes it
    ref = 100 + drift_ + rng.normal(0, 0.5, 8)
    fast = 1.5 * (100 + drift_) + rng.normal(0, 0.5, 8)
    same = 100 + drift_ + rng.normal(0, 0.5, 8)
    c = compare(frame({"ref": ref.tolist(), "fast": fast.tolist(), "same": same.tolist()}),
                reference="ref", metrics=("tokens_per_s",)).set_index("config_label")
    assert c.loc["fast", "reference"] == "ref" and c.loc["fast", "reference_rule"] == "compare_to"
    tt = sps.ttest_rel(fast, ref)
    ci = tt.confidence_interval(0.95)
    assert c.loc["fast", "diff_ci_low"] == pytest.approx(ci.low)
    assert c.loc["fast", "diff_ci_high"] == pytest.approx(ci.high)
    assert c.loc["fast", "p_value"] == pytest.approx(tt.pvalue)
    assert c.loc["fast", "finding"] and c.loc["fast", "better"]
    assert c.loc["fast", "ci_method"] == "paired t" and c.loc["fast", "n_pairs"] == 8
    # ratio of geometric means, t on the log ratios
    lr = np.log(fast) - np.log(ref)
    assert c.loc["fast", "ratio"] == pytest.approx(np.exp(lr.mean()))
    lo, hi = sps.t.interval(0.95, 7, loc=lr.mean(), scale=sps.sem(lr))
    assert c.loc["fast", "ratio_ci_low"] == pytest.approx(np.exp(lo))
    assert c.loc["fast", "ratio_ci_high"] == pytest.approx(np.exp(hi))
    assert not c.loc["same", "finding"]


def test_false_positive_rate_of_paired_comparison_is_nominal():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        a, b = rng.normal(100, 5, 3), rng.normal(100, 5, 3)
        c = compare(frame({"a": a.tolist(), "b": b.tolist()}), metrics=("tokens_per_s",))
        hits += bool(c["finding"].iloc[0])
    assert hits / 200 <= 0.09


def test_comparison_too_few_pairs_and_non_positive_values():
    c = compare(frame({"a": [1.0, 2.0], "b": [5.0]}), reference="b",
                metrics=("tokens_per_s",)).iloc[0]
    assert c["n_pairs"] == 1 and not c["finding"] and c["ci_method"] == "none"
    assert "too few paired cycles" in c["note"] and "1 cycle(s) without a partner" in c["note"]
    c = compare(frame({"a": [0.0, 2.0, 3.0], "b": [5.0, 6.0, 7.0]}), reference="b",
                metrics=("tokens_per_s",)).iloc[0]
    assert np.isnan(c["ratio"]) and np.isnan(c["ratio_ci_low"])
    assert "no ratio" in c["note"] and np.isfinite(c["diff_ci_low"])


def test_pairs_by_campaign_run_and_cycle_when_a_run_lost_a_result():
    r1 = frame({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.1]}, run_id="r1")
    r2 = frame({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.1, 4.0]}, run_id="r2")
    r2 = r2[~((r2["config_name"] == "a") & (r2["cycle"] == 2))]  # a lost a result
    c = compare(pd.concat([r1, r2]), reference="a", metrics=("tokens_per_s",)).iloc[0]
    assert c["n_pairs"] == 5 and "1 cycle(s) without a partner" in c["note"]
    assert c["diff_mean"] == pytest.approx(np.mean([1, 1, 1.1, 1, 1]))


def test_default_reference_is_alphabetical_and_said():
    c = compare(frame({"zeta": [1.0, 2.0], "alpha": [1.0, 2.5]}), metrics=("tokens_per_s",))
    assert c["reference"].iloc[0] == "alpha" and "alphabetically" in c["reference_rule"].iloc[0]
    by_hash = compare(frame({"zeta": [1.0, 2.0], "alpha": [1.0, 2.5]}), reference="h-zeta",
                      metrics=("tokens_per_s",))
    assert by_hash["reference"].iloc[0] == "zeta"


def test_compare_unknown_or_ambiguous_reference():
    with pytest.raises(ValueError, match="not in the results"):
        compare(frame({"a": [1, 2]}), reference="zzz")
    both = pd.concat([frame({"x": [1.0, 2.0]}, campaign="a"),
                      frame({"x": [1.0, 2.0]}, campaign="b")])
    both["config_hash"] = both["campaign"]
    with pytest.raises(ValueError, match="names 2 configurations"):
        compare(both, reference="x")


def test_drift_detection_on_synthetic_trend():
    rng = np.random.default_rng(0)
    df = frame({"warming": (np.arange(10) * 5 + rng.normal(0, 1, 10)).tolist(),
                "steady": rng.normal(50, 1, 10).tolist()}, metric="energy_raw_j")
    d = drift(df, metrics=("energy_raw_j",)).set_index("config_label")
    assert d.loc["warming", "drifted"] and d.loc["warming", "spearman_rho"] > 0.9
    assert not d.loc["steady", "drifted"]


def test_drift_never_flags_three_or_four_cycles():
    d = drift(frame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0, 4.0]}, metric="energy_raw_j"),
              metrics=("energy_raw_j",)).set_index("config_label")
    assert d.loc["a", "p_value"] == pytest.approx(1 / 3)
    assert d.loc["a", "min_p"] == pytest.approx(1 / 3)
    assert d.loc["b", "min_p"] == pytest.approx(1 / 12)
    assert not d["drifted"].any()
    assert "unattainable" in d.loc["a", "note"] and d.loc["a", "p_method"] == "exact permutation"


def test_drift_exact_p_matches_scipy_permutation_test():
    y = np.array([3.0, 1.0, 4.0, 1.5, 5.0, 9.0])
    d = drift(frame({"a": y.tolist()}, metric="energy_raw_j"),
              metrics=("energy_raw_j",)).iloc[0]

    def rho(x, yy, axis=-1):  # Spearman = Pearson of ranks, vectorised over resamples
        xr, yr = sps.rankdata(x, axis=axis), sps.rankdata(yy, axis=axis)
        xr, yr = xr - xr.mean(axis, keepdims=True), yr - yr.mean(axis, keepdims=True)
        return (xr * yr).sum(axis) / np.sqrt((xr ** 2).sum(axis) * (yr ** 2).sum(axis))

    ref = sps.permutation_test((np.arange(1.0, 7.0), y), rho, permutation_type="pairings",
                               n_resamples=np.inf, vectorized=True)
    assert d["p_value"] == pytest.approx(ref.pvalue)
    assert d["spearman_rho"] == pytest.approx(ref.statistic)


def test_pareto_front_known_answer():
    pts = pd.DataFrame({"j": [1.0, 2.0, 1.5, 3.0], "tps": [10.0, 30.0, 5.0, 20.0]},
                       index=["a", "b", "c", "d"])
    # c is dominated by a (less energy, more speed); d by b
    assert pareto_front(pts, "j", "tps", maximise_other=True) == ["a", "b"]
    assert pareto_front(pts, "j", "tps", maximise_other=False) == ["a", "c"]


def test_coverage_benchmark_small_version():
    """bench/ci_coverage.py at small size: the new intervals cover, the old did not."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "bench" / "ci_coverage.py"
    spec = importlib.util.spec_from_file_location("ci_coverage", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.one("normal", 3, 300, 199, np.random.default_rng(0))
    assert r["cov_new"] >= 0.90 and r["fp_diff_new"] <= 0.10
    assert r["cov_old"] < 0.85  # the old bootstrap's known under-coverage at n = 3


def test_offset_by_a_constant_is_a_constant_difference_not_p_1e_minus_65():
    ref = np.array([0.401, 0.402, 0.403, 0.404, 0.405])
    c = compare(frame({"a": (ref + 0.2).tolist(), "ref": ref.tolist()}), reference="ref",
                metrics=("tokens_per_s",)).iloc[0]
    assert c["ci_method"] == "paired constant" and c["finding"]
    assert c["diff_ci_low"] == c["diff_ci_high"] == pytest.approx(0.2)
    assert c["ratio_ci_method"] == "t on log ratios"
