"""Energy arithmetic on traces, RAPL on a sysfs tree, NVML against a simulated library."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from llem_core.config import EnergyConfig
from llem_core.energy.rapl import RaplMeter, package_domains
from llem_core.energy.select import open_meter
from llem_core.energy.trace import (
    baseline_adjusted,
    clip_trace,
    counter_delta,
    detect_update_period,
    integrate_power,
    relative_difference,
)
from llem_core.runner import energy_result

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


def test_clip_trace_interpolates_edges():
    ts, ws = clip_trace([0, 1, 2], [0, 100, 100], 0.5, 1.5)
    assert ts == [0.5, 1.0, 1.5] and ws == [50.0, 100.0, 100.0]
    assert integrate_power(ts, ws) == pytest.approx(0.5 * 75 + 0.5 * 100)


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


def test_energy_result_flags():
    from llem_core.energy.base import Baseline, EnergyReading

    r = EnergyReading(source="nvml_counter", joules=1000.0, window_s=12.0,
                      polled_joules=900.0, counter_update_period_s=0.1)
    e = energy_result(r, Baseline(watts=50.0, seconds=5, source="nvml_counter"), 500, 10, None,
                      "nvml_counter")
    assert e.adjusted_j == pytest.approx(400.0)
    assert e.raw_j_per_output_token == pytest.approx(2.0)
    assert e.adjusted_j_per_output_token == pytest.approx(0.8)
    assert e.counter_vs_polled_rel_diff == pytest.approx(0.1)
    assert any("differ by 10.0%" in f for f in e.flags)
    short = EnergyReading(source="nvml_counter", joules=5.0, window_s=0.5,
                          counter_update_period_s=0.1)
    assert any("shorter than 10 counter updates" in f
               for f in energy_result(short, None, 5, 1, None, "nvml_counter").flags)


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
    m.begin()
    (d / "energy_uj").write_text("1500000")  # wrapped: 500,000 + 1,500,000 uJ = 2 J
    r = m.end()
    assert r.source == "rapl" and r.joules == pytest.approx(2.0)
    assert m.hardware()["domains"] == {"intel-rapl:0": "package-0"}


def test_auto_meter_falls_back_to_none_with_reason(monkeypatch):
    import llem_core.energy.rapl as rapl

    monkeypatch.setattr(rapl, "POWERCAP", rapl.Path("/nonexistent"))
    m = open_meter(EnergyConfig(meter="auto"), [0], on_gpu=False)
    assert m.source == "none" and "RAPL" in m.hardware()["reason"]
    assert open_meter(EnergyConfig(meter="none"), [0], on_gpu=False).source == "none"


class _FakeNvml(types.ModuleType):
    """A simulated NVML: a 250 W GPU whose counter advances with wall time."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_SUCCESS = 0

    def __init__(self):
        super().__init__("pynvml")
        import time

        self._time = time.monotonic
        self._t0 = time.monotonic()

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        # 250 W = 250 mJ per ms; quantised to 20 ms updates like a V100.
        elapsed = self._time() - self._t0
        return int(int(elapsed / 0.02) * 0.02 * 250_000)

    def nvmlDeviceGetFieldValues(self, h, ids):
        raise self.NVMLError("not supported")

    def nvmlDeviceGetPowerUsage(self, h):
        return 250_000

    def nvmlDeviceGetTemperature(self, h, kind):
        return 55

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1400

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return 0x4  # sw power cap

    def nvmlSystemGetDriverVersion(self):
        return "999.1"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlDeviceGetName(self, h):
        return b"Simulated GPU"

    def nvmlDeviceGetUUID(self, h):
        return "GPU-sim"

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(total=80 * 2**30, used=2**30)

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 300_000


def test_nvml_meter_against_simulated_library(monkeypatch):
    import time

    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    from llem_core.energy.nvml import NvmlMeter

    m = NvmlMeter([0], poll_interval_s=0.02)
    assert m.source == "nvml_counter"
    assert m.counter_update_period_s == pytest.approx(0.02, abs=0.01)
    m.begin()
    time.sleep(0.5)
    r = m.end()
    m.close()
    # counter and polling both see ~250 W over the window
    assert r.joules / r.window_s == pytest.approx(250, rel=0.15)
    assert r.polled_joules / r.window_s == pytest.approx(250, rel=0.15)
    assert r.thermal["gpu0"]["throttle_reasons"] == ["sw_power_cap"]
    assert r.thermal["gpu0"]["temperature_start_c"] == 55
    hw = m.hardware()
    assert hw["driver"] == "999.1" and hw["cuda_driver"] == "12.4"
    assert hw["gpus"][0]["name"] == "Simulated GPU"


def test_numpy_trapezoid_exists():
    assert hasattr(np, "trapezoid")


def test_baseline_temperature_band_flag():
    from llem_core.runner import baseline_band_flag

    thermal = {"gpu0": {"temperature_start_c": 62.0}, "gpu1": {"temperature_start_c": 55.0}}
    assert baseline_band_flag(60.0, thermal, 5.0) is None
    assert "taken at 50 C but the window started at 62 C" in baseline_band_flag(50.0, thermal,
                                                                                5.0)
    assert baseline_band_flag(None, thermal, 5.0) is None
    assert baseline_band_flag(50.0, {}, 5.0) is None
