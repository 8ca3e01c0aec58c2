"""Quantities that cannot be negative are summarised on their natural scale (geometric
mean, t interval on the logs); n = 2 is never a result; negative idle-adjusted energy is a
caveat, not a silent number."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from llem_core.analysis import metrics as registry
from llem_core.analysis.stats import MIN_PUBLISHABLE, compare, geo_mean_ci, summarise


def frame(values: dict[str, list[float]], metric: str) -> pd.DataFrame:
    rows = []
    for name, vals in values.items():
        for cycle, v in enumerate(vals, start=1):
            rows.append({"campaign": "c", "run_id": "r1", "config_name": name,
                         "config_hash": f"h-{name}", "cycle": cycle, "position": cycle,
                         metric: v, "status": "success"})
    return pd.DataFrame(rows)


def test_the_example_that_went_negative_is_positive_now():
    """tokens/s 870 [-557, 2.3e+03] was printed at n = 2 with a Student-t interval."""
    df = frame({"a": [600.0, 1140.0]}, "tokens_per_s")
    row = summarise(df, metrics=("tokens_per_s",)).iloc[0]
    assert row["ci_low"] > 0 and row["ci_low"] <= row["mean"] <= row["ci_high"]
    assert row["estimator"] == "geometric mean" and row["ci_method"] == "log-t"
    assert row["mean"] == pytest.approx(np.sqrt(600.0 * 1140.0))
    assert not row["publishable"] and "not publishable" in row["note"]


@pytest.mark.parametrize("metric", [m.name for m in registry.METRICS if m.positive])
def test_no_positive_metric_interval_below_zero(metric):
    rng = np.random.default_rng(3)
    for n in (2, 3, 4):
        vals = np.abs(rng.normal(1.0, 2.0, size=(20, n))) + 1e-6  # wildly spread
        df = frame({f"c{i}": list(v) for i, v in enumerate(vals)}, metric)
        s = summarise(df, metrics=(metric,))
        assert (s["ci_low"] >= 0).all() and (s["mean"] >= 0).all()
        assert ((s["ci_low"] <= s["mean"]) & (s["mean"] <= s["ci_high"])).all()


def test_log_t_interval_is_the_textbook_one():
    x = np.array([3.0, 5.0, 4.0, 6.5])
    [(center, lo, hi, method)] = geo_mean_ci([x])
    logs = np.log(x)
    half = sps.t.ppf(0.975, 3) * logs.std(ddof=1) / 2
    assert center == pytest.approx(np.exp(logs.mean()))
    assert (lo, hi) == pytest.approx((np.exp(logs.mean() - half), np.exp(logs.mean() + half)))
    assert method == "log-t"


def test_zero_in_a_positive_metric_falls_back_to_a_clipped_t_interval():
    df = frame({"a": [0.0, 0.001, 0.02]}, "itl_p50_s")
    row = summarise(df, metrics=("itl_p50_s",)).iloc[0]
    assert row["estimator"] == "mean" and row["ci_low"] == 0.0
    assert "clipped at 0" in row["ci_method"]


def test_adjusted_energy_keeps_its_sign_and_says_why_it_is_negative():
    df = frame({"a": [-0.186, 0.05, 0.15]}, "j_per_token_adjusted")
    row = summarise(df, metrics=("j_per_token_adjusted",)).iloc[0]
    assert row["estimator"] == "mean" and row["ci_method"] == "t"
    assert row["ci_low"] < 0  # a real sign, not clipped: its mean can be near zero
    assert "negative in 1 of 3 cycles" in row["note"] and "idle baseline" in row["note"]


def test_two_paired_cycles_are_never_a_finding():
    df = pd.concat([frame({"a": [100.0, 101.0]}, "tokens_per_s"),
                    frame({"b": [200.0, 202.0]}, "tokens_per_s")])
    c = compare(df, "a", metrics=("tokens_per_s",)).iloc[0]
    assert c["excludes_zero"] and not c["finding"] and not c["publishable"]
    assert c["better"] is None and "not publishable" in c["note"]
    three = pd.concat([frame({"a": [100.0, 101.0, 99.0]}, "tokens_per_s"),
                       frame({"b": [200.0, 202.0, 199.0]}, "tokens_per_s")])
    c3 = compare(three, "a", metrics=("tokens_per_s",)).iloc[0]
    assert c3["finding"] and c3["publishable"] and MIN_PUBLISHABLE == 3


def test_latency_distribution_states_both_standard_deviations():
    from llem_core.runtime.latency import Distribution

    d = Distribution.of([0.1, 0.2, 0.4])
    assert d.std == pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1))
    assert d.std_population == pytest.approx(np.std([0.1, 0.2, 0.4]))  # vllm bench serve's
    assert d.std_population < d.std
