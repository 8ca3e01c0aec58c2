"""The device layer: readiness, the phases and the GPU meter read GPUs only through it, so
a new device library is one class registered with ``llem_core.runtime.devices.register``."""

from __future__ import annotations

import time

import pytest

from llem_core.runtime import devices
from llem_core.runtime.devices import DeviceError, DeviceUnavailable, Memory
from llem_core.runtime.energy.gpu import GpuMeter
from llem_core.runtime.experiment.phases import gpu_temperature
from llem_core.runtime.health import NoGpu, Thresholds, check, read_gpus
from tests.test_monitor import nvml  # noqa: F401  (fixture)


class MadeUpGpu:
    """A GPU of a made-up library: 100 W, its counter ticking every 10 ms."""

    def __init__(self, index: int, temperature_c: float, pids: list[int]) -> None:
        self.index = index
        self._temperature_c = temperature_c
        self._pids = pids
        self._t0 = time.monotonic()

    def name(self) -> str:
        return f"Made-up {self.index}"

    def uuid(self) -> str:
        return f"MU-{self.index}"

    def temperature_c(self) -> float:
        return self._temperature_c

    def memory(self) -> Memory:
        return Memory(total_bytes=1000, used_bytes=20)

    def power_limit_w(self) -> float:
        return 150.0

    def compute_pids(self) -> list[int]:
        return list(self._pids)

    def power_w(self) -> float:
        return 100.0

    def power_is_instant(self) -> bool:
        return True

    def energy_mj(self) -> int:
        ticks = int((time.monotonic() - self._t0) / 0.01)
        return 5_000_000 + ticks * 1000

    def sm_clock_mhz(self) -> float:
        return 1000.0

    def throttle_reasons(self) -> list[str]:
        raise DeviceError("this library cannot tell")


class MadeUpGpus:
    kind = "madeup"
    label = "MadeUp"
    closed = 0

    def __init__(self) -> None:
        self._gpus = [MadeUpGpu(0, 40.0, []), MadeUpGpu(1, 91.0, [4242])]

    def count(self) -> int:
        return len(self._gpus)

    def device(self, index: int) -> MadeUpGpu:
        return self._gpus[index]

    def driver(self) -> dict[str, str]:
        return {"driver": "madeup-1"}

    def close(self) -> None:
        MadeUpGpus.closed += 1


@pytest.fixture
def providers():
    """The registry as it was, after the test."""
    saved = dict(devices.PROVIDERS)
    yield devices.PROVIDERS
    devices.PROVIDERS.clear()
    devices.PROVIDERS.update(saved)


def test_a_registered_device_library_is_what_readiness_reads(providers):
    devices.register("madeup", MadeUpGpus)
    assert list(providers) == ["madeup", "nvml"]
    closed = MadeUpGpus.closed
    r = check([0, 1], Thresholds(max_temperature_c=80.0))
    assert not r.ready and r.no_gpu is None
    assert r.reasons == ["gpu1 at 91 C (limit 80 C)",
                         "gpu1 runs other compute processes: pids [4242]"]
    assert [g["name"] for g in r.gpus] == ["Made-up 0", "Made-up 1"]
    assert r.gpus[0]["memory_used_pct"] == pytest.approx(2.0)
    assert check([0], Thresholds()).ready
    assert MadeUpGpus.closed == closed + 2  # each check opened and closed the library
    # the phases' temperature for the baseline band reads the same layer
    assert gpu_temperature([0, 1]) == 91.0
    assert gpu_temperature([5]) is None


def test_the_gpu_meter_measures_a_registered_device_library():
    meter = GpuMeter(MadeUpGpus(), [0], poll_interval_s=0.02)
    try:
        assert meter.source == "madeup_counter"
        start = meter.mark()
        time.sleep(0.3)
        r = meter.reading(start, meter.mark())
        hw = meter.hardware()
    finally:
        meter.close()
    assert r.source == "madeup_counter" and r.joules == pytest.approx(100 * r.window_s, abs=2)
    assert r.polled_joules == pytest.approx(100 * r.window_s, rel=0.05)
    assert r.thermal["gpu0"]["throttle_reasons"] == []  # an unreadable read is no reason
    assert hw["driver"] == "madeup-1" and hw["gpus"] == [
        {"index": 0, "name": "Made-up 0", "uuid": "MU-0", "memory_total_bytes": 1000,
         "power_limit_w": 150.0}]


def test_no_device_library_passes_readiness_with_every_reason(providers):
    def broken() -> MadeUpGpus:
        raise DeviceUnavailable("MadeUp: no driver")

    def also_broken() -> MadeUpGpus:
        raise DeviceUnavailable("Other: not installed")

    providers.clear()
    devices.register("other", also_broken)
    devices.register("madeup", broken)
    r = check([0], Thresholds())
    assert r.ready and r.no_gpu == "MadeUp: no driver; Other: not installed"
    assert gpu_temperature([0]) is None


def test_nvml_through_the_layer_reads_the_simulated_gpu(nvml):  # noqa: F811
    nvml()
    [state] = read_gpus([0])
    assert (state.name, state.temperature_c, state.compute_pids) == ("Simulated GPU", 45.0, [])
    assert state.memory_used_pct == pytest.approx(100 * 2**28 / (80 * 2**30))
    with pytest.raises(NoGpu, match=r"GPU 3 not present \(1 GPUs\)"):
        read_gpus([3])
    assert gpu_temperature([0]) == 45.0


def test_a_failed_nvml_read_is_a_device_error_not_a_library_one(nvml):  # noqa: F811
    fake = nvml()

    def lost(handle: int, kind: int) -> int:
        raise fake.NVMLError("simulated: GPU is lost")

    fake.nvmlDeviceGetTemperature = lost
    with pytest.raises(DeviceError, match="gpu0: simulated: GPU is lost"):
        read_gpus([0])
