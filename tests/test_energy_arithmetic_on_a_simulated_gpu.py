"""The energy arithmetic (raw, idle-adjusted, per token, flags) against the simulated NVML."""

from __future__ import annotations

import time

import pytest

from llem_core.runtime.energy.trace import covered_energy
from tests.test_monitor import monitor, nvml, timed_window  # noqa: F401  (fixture)


def _power_fails_while(fake, failing: dict[str, bool]) -> None:
    read = fake.nvmlDeviceGetPowerUsage

    def flaky(handle: int) -> int:
        if failing["on"]:
            raise fake.NVMLError("simulated: power read failed")
        return read(handle)

    fake.nvmlDeviceGetPowerUsage = flaky


def _window_with_power_failing(nvml, failing_s: float, readable_s: float):  # noqa: F811
    """A window whose energy counter is untrusted (it fails at the window's end) and
    whose power reads fail for its first ``failing_s`` seconds."""
    fake = nvml(fail_counter="3-5")
    failing = {"on": False}
    _power_fails_while(fake, failing)
    with monitor() as mon:
        failing["on"] = True
        mon.begin_window("w")
        time.sleep(failing_s)
        failing["on"] = False
        time.sleep(readable_s)
        return mon.end_window("w")


def test_polled_energy_covers_the_whole_window_when_an_edge_sample_fails(nvml):  # noqa: F811
    # The counter fails at the window's end, so energy is polled power; the power read at
    # the window's start (and the next poll or so) fails. Integrating only the span the
    # good samples cover under-reported the window (about 170 W of a 200 W draw).
    m = _window_with_power_failing(nvml, failing_s=0.08, readable_s=0.5)
    assert m.source == "nvml_power" and m.reading.failed_samples >= 1
    assert m.joules / m.seconds == pytest.approx(200, rel=0.03)


def test_a_long_gap_in_polled_power_is_no_number(nvml):  # noqa: F811
    # Power unreadable for most of the window and the counter untrusted: the old code
    # reported the energy of the short readable span as the window's (about 1/3 of it).
    m = _window_with_power_failing(nvml, failing_s=0.9, readable_s=0.3)
    assert m.joules is None and m.adjusted_joules is None
    assert "gap" in m.reason and "unreadable at the window's end" in m.reason


def test_covered_energy_known_answers():
    # 100 W samples at 1..3 s of the window [0, 4]: edges held flat -> 400 J.
    assert covered_energy([1, 2, 3], [100, 100, 100], 0, 4, 1.0) == pytest.approx(400)
    assert covered_energy([1, 2, 3], [100, 100, 100], 0, 4, 0.9) is None
    assert covered_energy([0, 4], [100, 300], 0, 4, 5) == pytest.approx(800)
    assert covered_energy([1], [100], 0, 4, 5) is None


@pytest.mark.parametrize("doc", [
    '{"measured_at": 1000.0, "temperature_c": 40, "baseline": {"watts": NaN, '
    '"seconds": 10, "source": "nvml_counter"}}',
    '{"measured_at": 1000.0, "temperature_c": 40, "baseline": {"watts": -5, '
    '"seconds": 10, "source": "nvml_counter"}}',
    '{"measured_at": 1000.0, "baseline": {"seconds": 10}}',
    '{"measured_at": "yesterday", "baseline": {}}',
    '[1, 2]',
])
def test_a_corrupt_cached_baseline_is_measured_again_not_used(tmp_path, monkeypatch, doc):
    # Old code: a NaN watts became the baseline (adjusted energy NaN), a missing key or a
    # list raised KeyError/TypeError and failed the experiment.
    from llem_core.runtime.energy import baseline_cache

    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path))
    path = baseline_cache.cache_path("GPU-abc")
    path.parent.mkdir(parents=True)
    path.write_text(doc)
    assert baseline_cache.load("GPU-abc", 600, 40.0, 5.0, now=1001.0) is None


def test_an_idle_window_the_counter_never_ticked_in_is_no_baseline(nvml):  # noqa: F811
    # With a 1 s counter and a 0.05 s idle window the counter does not move: the old
    # code took 0 J / 0.05 s = 0 W as the idle baseline, so adjusted energy equalled raw.
    nvml(period_s=1.0)
    with monitor() as mon:
        assert mon.measure_idle(0.05) is None
        m = timed_window(mon, 0.1)
    assert m.adjusted_joules is None and m.baseline_w is None


def test_a_rapl_read_failing_at_a_window_start_is_flagged(tmp_path):
    # The failure at the start mark was counted before the window (end - start = 0
    # failures): a window whose start edge was never read carried no flag at all.
    from llem_core.runtime.energy.rapl import RaplMeter
    from tests.test_energy import _fake_rapl

    d = _fake_rapl(tmp_path, energy_uj=1_000_000, rng=2**30)
    m = RaplMeter(poll_interval_s=10, root=tmp_path)
    (d / "energy_uj").write_text("garbage")
    start = m.mark()
    (d / "energy_uj").write_text("4000000")
    r = m.reading(start, m.mark())
    m.close()
    assert r.failed_samples == 1
    assert any("unreadable at the window's start" in f for f in r.flags)


def test_an_idle_baseline_that_cannot_be_measured_is_a_warning_not_a_crash(tmp_path,
                                                                           monkeypatch):
    # EnergyMonitor.measure_idle returns None when the idle window has no energy, and
    # the baseline phase then set None.temperature_c: AttributeError ended the experiment.
    from llem_core.campaign.config import ExperimentConfig
    from llem_core.runtime.energy.base import EnergyReading
    from llem_core.runtime.energy.monitor import EnergyMonitor
    from llem_core.runtime.experiment import phases

    class Blind:
        source = "rapl"

        def hardware(self) -> dict:
            return {}

        def mark(self) -> float:
            return time.monotonic()

        def reading(self, start: float, end: float) -> EnergyReading:
            return EnergyReading(source="rapl", joules=None, window_s=end - start,
                                 note="simulated: unreadable")

        def close(self) -> None:
            pass

    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path))
    cfg = ExperimentConfig(model="./m", energy={"baseline_s": 0.01})
    warnings: list[str] = []
    got = phases.baseline(cfg, EnergyMonitor(Blind()), {}, lambda _m: None, warnings)
    assert got == (None, None)
    assert warnings == ["no idle baseline: idle baseline not measurable: simulated: "
                        "unreadable: adjusted energy is null"]
