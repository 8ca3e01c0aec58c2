"""Warm-up until stable, and the per-GPU baseline cache."""

from __future__ import annotations

import pytest

from llem_core.runtime.energy import baseline_cache
from llem_core.runtime.energy.base import Baseline
from llem_core.runtime.warmup import coefficient_of_variation, warm_up


def durations(seq):
    it = iter(seq)
    return lambda: next(it)


def test_fixed_warmup_count():
    r = warm_up(durations([5, 4, 3]), min_runs=2)
    assert r.runs == 2 and r.converged is None


def test_warmup_until_cv_below_threshold():
    # slow first runs (compilation, caches), then steady at ~1.0 s
    seq = [3.0, 2.0, 1.5, 1.0, 1.01, 0.99, 1.0, 1.0]
    r = warm_up(durations(seq), min_runs=1, cv_threshold=0.05, window=3)
    assert r.converged and r.runs == 6
    assert coefficient_of_variation(r.durations_s[-3:]) <= 0.05


def test_warmup_capped():
    seq = [1.0, 2.0] * 20
    r = warm_up(durations(seq), min_runs=1, cv_threshold=0.01, window=3, max_runs=7)
    assert r.runs == 7 and r.converged is False


def test_baseline_cache_age_and_band(tmp_path, monkeypatch):
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path))
    b = Baseline(watts=61.5, seconds=10.0, source="nvml_counter")
    baseline_cache.store("GPU-abc", b, temperature_c=40.0, now=1000.0)
    got = baseline_cache.load("GPU-abc", max_age_s=600, temperature_c=42.0, band_c=5.0,
                              now=1100.0)
    assert got is not None and got[0].watts == pytest.approx(61.5) and got[1] == 100.0
    assert baseline_cache.load("GPU-abc", 600, 50.0, 5.0, now=1100.0) is None  # too warm
    assert baseline_cache.load("GPU-abc", 60, 40.0, 5.0, now=1100.0) is None  # too old
    assert baseline_cache.load("GPU-abc", 0, 40.0, 5.0, now=1001.0) is None  # disabled
    assert baseline_cache.load("GPU-other", 600, 40.0, 5.0, now=1001.0) is None


def test_baseline_reused_from_cache_with_age(tmp_path, monkeypatch):
    from llem_core.campaign.config import EnergyConfig

    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path))
    calls = []

    def measure(seconds):
        calls.append(seconds)
        return Baseline(watts=42.0, seconds=seconds, source="rapl")

    key = baseline_cache.device_key({"domains": {"intel-rapl:0": "package-0"}}, "rapl")
    cached = EnergyConfig(baseline_s=0.5, baseline_cache_s=600)
    _b1, age1 = baseline_cache.obtain(key, cached, None, measure, lambda _m: None)
    b2, age2 = baseline_cache.obtain(key, cached, None, measure, lambda _m: None)
    assert calls == [0.5] and age1 is None
    assert b2.watts == 42.0 and age2 is not None and age2 >= 0
    baseline_cache.obtain(key, EnergyConfig(baseline_s=0.5), None, measure, lambda _m: None)
    assert calls == [0.5, 0.5]
    gpus = {"gpus": [{"index": 0, "uuid": "GPU-a"}, {"index": 1}]}
    assert baseline_cache.device_key(gpus, "nvml_counter") == "GPU-a+1"
