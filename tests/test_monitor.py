"""The NVML meter and EnergyMonitor against the simulated NVML of tests/fake_nvml.

The simulated GPU draws 200 W and its energy counter starts at 988,122 J (the energy
since boot), so an energy computed from a failed (or zero) counter read would be
obviously wrong.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from llem_core.runtime.energy import EnergyMonitor, Measurement
from llem_core.runtime.energy.monitor import default_sync
from llem_core.runtime.energy.null import NullMeter

FAKE = Path(__file__).parent / "fake_nvml" / "pynvml.py"


@pytest.fixture
def nvml(monkeypatch):
    """Install the simulated NVML (configured by keyword: FAKE_NVML_<KEY>) as pynvml."""

    def install(**env: object) -> types.ModuleType:
        env.setdefault("period_s", 0.02)  # a V100-like 20 ms counter keeps tests short
        for key, value in env.items():
            monkeypatch.setenv(f"FAKE_NVML_{key.upper()}", str(value))
        spec = importlib.util.spec_from_file_location("pynvml", FAKE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return install


def monitor(sync=None) -> EnergyMonitor:
    from llem_core.runtime.energy.nvml import NvmlMeter

    return EnergyMonitor(NvmlMeter([0], poll_interval_s=0.02), sync=sync or (lambda: None))


def timed_window(mon: EnergyMonitor, seconds: float = 0.4) -> Measurement:
    with mon.window("w") as w:
        time.sleep(seconds)
    return w.measurement


def test_meter_reads_counter_polling_and_hardware(nvml):
    nvml()
    with monitor() as mon:
        assert mon.source == "nvml_counter"
        assert mon.meter.counter_update_period_s == pytest.approx(0.02, abs=0.01)
        m = timed_window(mon)
        hw = mon.hardware()
    assert m.source == "nvml_counter" and m.flags == [] and m.reason is None
    assert m.joules / m.seconds == pytest.approx(200, rel=0.15)
    assert m.reading.polled_joules / m.seconds == pytest.approx(200, rel=0.05)
    assert m.per_device_j == {"gpu0": m.joules}
    assert m.reading.thermal["gpu0"]["temperature_start_c"] == 45
    assert hw["driver"] == "999.1" and hw["cuda_driver"] == "12.4"
    assert hw["gpus"][0]["name"] == "Simulated GPU"


def test_overlapping_windows_and_sync_at_both_edges(nvml):
    nvml()
    calls = []
    with monitor(sync=lambda: calls.append(time.monotonic())) as mon:
        mon.begin_window("a")
        time.sleep(0.3)
        mon.begin_window("b")
        time.sleep(0.3)
        a = mon.end_window("a")
        time.sleep(0.3)
        b = mon.end_window("b")
        with pytest.raises(ValueError, match="not open"):
            mon.end_window("a")
        mon.begin_window("c")
        with pytest.raises(ValueError, match="already open"):
            mon.begin_window("c")
    assert len(calls) == 5
    assert a.seconds == pytest.approx(0.6, abs=0.1) and b.seconds == pytest.approx(0.6, abs=0.1)
    for m in (a, b):
        assert m.joules / m.seconds == pytest.approx(200, rel=0.15)


def test_idle_baseline_gives_adjusted_energy(nvml):
    nvml()
    with monitor() as mon:
        base = mon.measure_idle(0.3)
        m = timed_window(mon)
    assert base.watts == pytest.approx(200, rel=0.2)
    assert m.baseline_w == base.watts
    assert m.adjusted_joules == pytest.approx(m.joules - base.watts * m.seconds)


def test_failed_counter_read_is_retried(nvml):
    fake = nvml(fail_counter="2")  # read 1: the meter's first read; 2: the window's start
    with monitor() as mon:
        m = timed_window(mon)
    assert fake._state["counter_reads"] == 4
    assert m.source == "nvml_counter" and m.reading.counter_failed_reads == 1
    assert m.joules / m.seconds == pytest.approx(200, rel=0.15)


@pytest.mark.parametrize(("env", "edge"), [
    ({"fail_counter": "2-4"}, "start"),
    ({"zero_counter": "2-4"}, "start"),
    ({"fail_counter": "3-5"}, "end"),
])
def test_untrusted_counter_falls_back_to_polling(nvml, env, edge):
    nvml(**env)
    with monitor() as mon:
        m = timed_window(mon)
    assert m.source == "nvml_power"
    assert m.joules == m.reading.polled_joules
    assert m.joules / m.seconds == pytest.approx(200, rel=0.05)  # not 988,122 J
    assert any(f"unreadable at the window's {edge}" in f and "polled power" in f
               for f in m.flags)
    assert m.reading.counter_failed_reads == 3


def test_counter_going_backwards_falls_back_to_polling(nvml):
    fake = nvml()
    with monitor() as mon:
        mon.begin_window("w")
        fake.OFFSET_MJ -= 10**6  # a driver reset between the edges
        time.sleep(0.3)
        m = mon.end_window("w")
    assert m.source == "nvml_power" and any("went backwards" in f for f in m.flags)


def test_failed_power_samples_are_skipped_and_counted(nvml):
    nvml(fail_power_every=3)
    with monitor() as mon:
        m = timed_window(mon)
    assert m.reading.failed_samples >= 3
    assert any("power samples failed to read and were skipped" in f for f in m.flags)
    # a failed sample is not a 0 W sample: polling still sees 200 W
    assert m.reading.polled_joules / m.seconds == pytest.approx(200, rel=0.05)


def test_nothing_readable_gives_no_number_and_a_reason(nvml):
    nvml(fail_counter="2-99", fail_power_every=1)
    with monitor() as mon:
        m = timed_window(mon, 0.2)
    assert m.joules is None and m.adjusted_joules is None
    assert "unreadable at the window's start" in m.reason and "power samples" in m.reason


def test_gross_disagreement_flagged_on_a_short_window(nvml):
    nvml(power_w=100)  # the counter accumulates 200 W, power reads say 100 W
    with monitor() as mon:
        m = timed_window(mon)
    assert m.source == "nvml_counter"
    assert any("power polling differ by" in f and "(> 25%)" in f for f in m.flags)


def test_null_meter_window_never_raises():
    mon = EnergyMonitor(NullMeter("no sensor here"))
    assert mon.measure_idle(0.01) is None
    with mon.window("w") as w:
        pass
    m = w.measurement
    assert m.joules is None and m.reason == "no sensor here" and m.seconds >= 0
    assert m.source == "none" and m.flags == []


def test_default_sync_uses_cuda_only_when_initialised(monkeypatch):
    synced = []

    class Cuda:
        initialised = True

        def is_initialized(self):
            return self.initialised

        def device_count(self):
            return 2

        def synchronize(self, index):
            synced.append(index)

    cuda = Cuda()
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    default_sync()
    assert synced == [0, 1]
    cuda.initialised = False
    default_sync()
    assert synced == [0, 1]


def test_default_sync_never_imports_torch():
    code = ("import sys; from llem_core.runtime.energy.monitor import default_sync; "
            "default_sync(); "
            "assert 'torch' not in sys.modules")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
