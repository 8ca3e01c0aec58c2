"""Energy arithmetic on traces, flags of a window, RAPL on a sysfs tree, meter selection."""

from __future__ import annotations

import pytest

from llem_core.campaign.config import EnergyConfig
from llem_core.runtime.energy.base import Baseline, EnergyReading
from llem_core.runtime.energy.rapl import RaplMeter, package_domains
from llem_core.runtime.energy.result import baseline_band_flag, energy_result
from llem_core.runtime.energy.select import open_meter
from llem_core.runtime.energy.trace import (
    baseline_adjusted,
    counter_delta,
    detect_update_period,
    integrate_power,
    relative_difference,
)

# A recorded-style trace: a GPU ramping from idle (60 W) to load (300 W), irregular samples.
TIMES = [0.0, 0.09, 0.21, 0.30, 0.42, 0.50, 0.61, 0.70, 0.83, 1.0]
WATTS = [60, 60, 150, 300, 300, 298, 302, 300, 180, 60]


def test_trapezoid_irregular_sampling_matches_hand_calculation():
    expected = sum((TIMES[i + 1] - TIMES[i]) * (WATTS[i] + WATTS[i + 1]) / 2
                   for i in range(len(TIMES) - 1))
    assert integrate_power(TIMES, WATTS) == pytest.approx(expected, rel=1e-12)
    # constant power: P * t exactly
    assert integrate_power([0, 0.3, 1.7, 2.0], [50, 50, 50, 50]) == pytest.approx(100.0)


def test_integration_rejects_bad_traces():
    with pytest.raises(ValueError):
        integrate_power([0, 2, 1], [1, 1, 1])
    with pytest.raises(ValueError):
        integrate_power([0, 1], [1])
    assert integrate_power([0.0], [100.0]) == 0.0


def test_counter_wraps_and_resets():
    assert counter_delta(100, 250, None) == 150
    assert counter_delta(2**32 - 10, 5, 2**32) == 15
    with pytest.raises(ValueError, match="reset"):
        counter_delta(500, 100, None)


def test_baseline_subtracted_over_window_only():
    # 1000 J over 10 s with a 40 W idle floor: 600 J above idle.
    assert baseline_adjusted(1000.0, 40.0, 10.0) == pytest.approx(600.0)
    assert relative_difference(100, 95) == pytest.approx(0.05)
    assert relative_difference(0, 0) is None


def test_update_period_detection_on_a_simulated_clock():
    t = [0.0]

    def clock():
        return t[0]

    def read():
        t[0] += 0.001  # each read advances 1 ms
        return int(t[0] / 0.1)  # the counter ticks every 100 ms

    assert detect_update_period(read, clock) == pytest.approx(0.1, abs=0.002)

    def frozen():
        t[0] += 0.001
        return 7

    assert detect_update_period(frozen, clock, timeout_s=0.05) is None

    def failing():  # every other read fails: a failure is not a change
        t[0] += 0.001
        return None if int(t[0] * 1000) % 2 else int(t[0] / 0.1)

    assert detect_update_period(failing, clock) == pytest.approx(0.1, abs=0.003)


def test_energy_result_flags():
    r = EnergyReading(source="nvml_counter", joules=1000.0, window_s=12.0,
                      polled_joules=900.0, counter_update_period_s=0.1)
    e = energy_result(r, Baseline(watts=50.0, seconds=5, source="nvml_counter"), 500, 10)
    assert e.adjusted_j == pytest.approx(400.0)
    assert e.raw_j_per_output_token == pytest.approx(2.0)
    assert e.adjusted_j_per_output_token == pytest.approx(0.8)
    assert e.raw_j_per_request == pytest.approx(100.0)
    assert e.counter_vs_polled_rel_diff == pytest.approx(0.1)
    assert any("differ by 10.0% (> 5%)" in f for f in e.flags)
    short = EnergyReading(source="nvml_counter", joules=5.0, window_s=0.5,
                          counter_update_period_s=0.1)
    assert any("shorter than 10 counter updates" in f
               for f in energy_result(short, None, 5, 1).flags)


@pytest.mark.parametrize(("window_s", "polled", "flagged"), [
    (1.5, 100.0, "(> 25%)"),   # gross disagreement on a short window
    (1.5, 180.0, None),        # 10 % on a short window: within its precision
    (12.0, 180.0, "(> 5%)"),   # 10 % on a long window
    (12.0, 196.0, None),
])
def test_counter_polling_agreement_bounds(window_s, polled, flagged):
    r = EnergyReading(source="nvml_counter", joules=200.0, window_s=window_s,
                      polled_joules=polled)
    flags = [f for f in energy_result(r, None, 10, 1).flags if "differ by" in f]
    assert (flags[0].endswith(flagged) if flagged else flags == [])


def test_unmeasured_window_has_no_numbers():
    r = EnergyReading(source="nvml_counter", joules=None, window_s=2.0, note="unreadable")
    e = energy_result(r, Baseline(watts=50.0, seconds=5, source="nvml_counter"), 10, 1)
    assert e.raw_j is None and e.adjusted_j is None and e.raw_j_per_output_token is None
    assert e.note == "unreadable" and e.counter_vs_polled_rel_diff is None


def test_adjusted_negative_is_flagged():
    r = EnergyReading(source="rapl", joules=10.0, window_s=1.0)
    e = energy_result(r, Baseline(watts=50.0, seconds=5, source="rapl"), 10, 1)
    assert e.adjusted_j == pytest.approx(-40.0) and any("negative" in f for f in e.flags)


def _fake_rapl(root, energy_uj=1000, rng=2**20):
    d = root / "intel-rapl:0"
    d.mkdir(parents=True)
    (d / "energy_uj").write_text(str(energy_uj))
    (d / "max_energy_range_uj").write_text(str(rng - 1))
    (d / "name").write_text("package-0")
    sub = root / "intel-rapl:0:0"
    sub.mkdir()
    (sub / "energy_uj").write_text("0")
    return d


def test_rapl_reads_package_domains_and_handles_wrap(tmp_path):
    d = _fake_rapl(tmp_path, energy_uj=2**22 - 500_000, rng=2**22)
    assert package_domains(tmp_path) == [d]
    m = RaplMeter(poll_interval_s=10, root=tmp_path)
    start = m.mark()
    (d / "energy_uj").write_text("1500000")  # wrapped: 500,000 + 1,500,000 uJ = 2 J
    r = m.reading(start, m.mark())
    assert r.source == "rapl" and r.joules == pytest.approx(2.0) and r.failed_samples == 0
    assert m.hardware()["domains"] == {"intel-rapl:0": "package-0"}
    m.close()


def test_rapl_failed_read_is_skipped_not_zero(tmp_path):
    d = _fake_rapl(tmp_path, energy_uj=1_000_000, rng=2**30)
    m = RaplMeter(poll_interval_s=10, root=tmp_path)
    start = m.mark()
    (d / "energy_uj").write_text("garbage")
    middle = m.mark()
    (d / "energy_uj").write_text("4000000")
    r = m.reading(start, m.mark())
    m.close()
    assert r.joules == pytest.approx(3.0) and r.failed_samples == 1
    assert any("RAPL reads failed" in f for f in r.flags)
    assert m.reading(start, middle).joules == 0.0


def test_auto_meter_falls_back_to_none_with_reason(monkeypatch):
    import llem_core.runtime.energy.rapl as rapl

    monkeypatch.setattr(rapl, "POWERCAP", rapl.Path("/nonexistent"))
    m = open_meter(EnergyConfig(meter="auto"), [0], on_gpu=False)
    assert m.source == "none" and "RAPL" in m.hardware()["reason"]
    assert open_meter(EnergyConfig(meter="none"), [0], on_gpu=False).source == "none"


def test_baseline_temperature_band_flag():
    thermal = {"gpu0": {"temperature_start_c": 62.0}, "gpu1": {"temperature_start_c": 55.0}}
    assert baseline_band_flag(60.0, thermal, 5.0) is None
    assert "taken at 50 C but the window started at 62 C" in baseline_band_flag(50.0, thermal,
                                                                                5.0)
    assert baseline_band_flag(None, thermal, 5.0) is None
    assert baseline_band_flag(50.0, {}, 5.0) is None
