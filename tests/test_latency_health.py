"""Latency definitions on a known token timeline; readiness decisions."""

from __future__ import annotations

import pytest

from llem_core.runtime.health import GpuState, NoGpu, Thresholds, assess, check, wait_until_ready
from llem_core.runtime.latency import Distribution, RequestTimeline, compute


def test_latency_definitions_on_known_timeline():
    # Request A: submitted at 10.0, tokens at 10.5, 10.6, 10.8 -> TTFT 0.5, E2E 0.8,
    # ITL [0.1, 0.2], TPOT (0.8 - 0.5) / 2 = 0.15.
    # Request B (same batch): one token at 10.5 -> TTFT 0.5, no ITL, no TPOT.
    rep = compute([RequestTimeline(10.0, [10.5, 10.6, 10.8]), RequestTimeline(10.0, [10.5])])
    assert rep.ttft_s.n == 2 and rep.ttft_s.mean == pytest.approx(0.5)
    assert rep.e2e_s.max == pytest.approx(0.8)
    assert rep.itl_s.n == 2
    assert sorted([rep.itl_s.min, rep.itl_s.max]) == pytest.approx([0.1, 0.2])
    assert rep.tpot_s.n == 1 and rep.tpot_s.mean == pytest.approx(0.15)
    assert rep.itl_counts == [2, 0]


def test_percentiles_known_answer():
    d = Distribution.of(list(range(1, 101)))
    assert d.p50 == pytest.approx(50.5) and d.p90 == pytest.approx(90.1)
    assert d.p99 == pytest.approx(99.01) and d.mean == pytest.approx(50.5)
    assert Distribution.of([]).mean is None


def test_timeline_must_be_ordered():
    with pytest.raises(ValueError):
        compute([RequestTimeline(1.0, [1.5, 1.2])])
    with pytest.raises(ValueError):
        compute([RequestTimeline(2.0, [1.5])])


def test_readiness_reasons():
    hot = GpuState(0, "g", temperature_c=85, memory_used_pct=50, compute_pids=[123, 7])
    r = assess([hot], Thresholds(80, 10, False, frozenset({7})))
    assert not r.ready
    assert any("85 C" in x for x in r.reasons)
    assert any("memory 50.0%" in x for x in r.reasons)
    assert any("[123]" in x for x in r.reasons)
    cool = GpuState(0, "g", temperature_c=40, memory_used_pct=1, compute_pids=[])
    assert assess([cool], Thresholds()).ready


def test_no_gpu_passes_and_says_why():
    def reader(_):
        raise NoGpu("NVML unavailable: no driver")

    r = check([0], Thresholds(), reader)
    assert r.ready and r.no_gpu == "NVML unavailable: no driver"


def test_wait_times_out_without_raising():
    t = [0.0]
    states = [GpuState(0, "g", temperature_c=90, memory_used_pct=0)]
    out = wait_until_ready([0], Thresholds(80), timeout_s=30, poll_s=10,
                           reader=lambda _: states, sleep=lambda s: t.__setitem__(0, t[0] + s),
                           clock=lambda: t[0])
    assert out["timed_out"] and out["waited_s"] == pytest.approx(30)


def test_wait_returns_when_cooled():
    t = [0.0]

    def reader(_):
        return [GpuState(0, "g", temperature_c=90 - t[0], memory_used_pct=0)]

    out = wait_until_ready([0], Thresholds(80), timeout_s=100, poll_s=5, reader=reader,
                           sleep=lambda s: t.__setitem__(0, t[0] + s), clock=lambda: t[0])
    assert not out["timed_out"] and out["waited_s"] == pytest.approx(15)
