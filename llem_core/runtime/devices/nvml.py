"""The device layer on NVML (nvidia-ml-py): the one module that imports ``pynvml``.

Every NVML call goes through :func:`_call`, which turns the library's errors into
:class:`DeviceError`. The module is imported only when a GPU is asked about, so parsing a
DAG file never loads NVML.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from llem_core.runtime.devices.base import DeviceError, DeviceUnavailable, Memory

T = TypeVar("T")

# NVML's clock-event (throttle) reason bits that mean the numbers were taken on a slowed GPU.
THROTTLE_BITS = {
    0x0000000000000002: "applications_clocks_setting",
    0x0000000000000004: "sw_power_cap",
    0x0000000000000008: "hw_slowdown",
    0x0000000000000020: "sw_thermal_slowdown",
    0x0000000000000040: "hw_thermal_slowdown",
    0x0000000000000080: "hw_power_brake_slowdown",
}


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_BITS.items() if mask & bit]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def start_nvml() -> ModuleType:
    """Import and initialise NVML, or raise DeviceUnavailable with the reason."""
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise DeviceUnavailable(f"nvidia-ml-py is not installed: {exc}") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise DeviceUnavailable(f"NVML unavailable (no NVIDIA driver/GPU?): {exc}") from exc
    return pynvml


class NvmlDevice:
    """One GPU through NVML. Library functions are looked up at each call (a test may
    replace one on the module)."""

    def __init__(self, nv: ModuleType, index: int) -> None:
        self._nv = nv
        self.index = index
        self._handle = self._call(lambda: nv.nvmlDeviceGetHandleByIndex(index))
        self._instant: bool | None = None

    def _call(self, read: Callable[[], T]) -> T:
        try:
            return read()
        except (self._nv.NVMLError, AttributeError) as exc:  # AttributeError: an old binding
            raise DeviceError(f"gpu{self.index}: {exc}") from exc

    def name(self) -> str:
        return _text(self._call(lambda: self._nv.nvmlDeviceGetName(self._handle)))

    def uuid(self) -> str:
        return _text(self._call(lambda: self._nv.nvmlDeviceGetUUID(self._handle)))

    def temperature_c(self) -> float:
        nv = self._nv
        return float(self._call(
            lambda: nv.nvmlDeviceGetTemperature(self._handle, nv.NVML_TEMPERATURE_GPU)))

    def memory(self) -> Memory:
        info = self._call(lambda: self._nv.nvmlDeviceGetMemoryInfo(self._handle))
        return Memory(total_bytes=int(info.total), used_bytes=int(info.used))

    def power_limit_w(self) -> float:
        return self._call(
            lambda: self._nv.nvmlDeviceGetEnforcedPowerLimit(self._handle)) / 1000.0

    def compute_pids(self) -> list[int]:
        procs = self._call(lambda: self._nv.nvmlDeviceGetComputeRunningProcesses(self._handle))
        return [p.pid for p in procs]

    def _instant_power(self) -> float | None:
        """The instant power field (newer drivers), None where the driver lacks it."""
        nv = self._nv
        try:
            [value] = self._call(
                lambda: nv.nvmlDeviceGetFieldValues(self._handle, [nv.NVML_FI_DEV_POWER_INSTANT]))
        except DeviceError:
            return None
        if value.nvmlReturn != nv.NVML_SUCCESS:
            return None
        return float(value.value.uiVal) / 1000.0

    def power_is_instant(self) -> bool:
        # Probed once: the averaged nvmlDeviceGetPowerUsage lags a changing load by ~1 s.
        if self._instant is None:
            self._instant = self._instant_power() is not None
        return self._instant

    def power_w(self) -> float:
        if self.power_is_instant():
            watts = self._instant_power()
            if watts is not None:
                return watts
        return self._call(lambda: self._nv.nvmlDeviceGetPowerUsage(self._handle)) / 1000.0

    def energy_mj(self) -> int:
        return int(self._call(
            lambda: self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle)))

    def sm_clock_mhz(self) -> float:
        nv = self._nv
        return float(self._call(lambda: nv.nvmlDeviceGetClockInfo(self._handle, nv.NVML_CLOCK_SM)))

    def throttle_reasons(self) -> list[str]:
        mask = self._call(lambda: self._nv.nvmlDeviceGetCurrentClocksEventReasons(self._handle))
        return throttle_names(int(mask or 0))


class NvmlDevices:
    """NVML started for as long as this is open."""

    kind = "nvml"
    label = "NVML"

    def __init__(self) -> None:
        self._nv = start_nvml()

    def _call(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except self._nv.NVMLError as exc:
            raise DeviceError(str(exc)) from exc

    def count(self) -> int:
        return int(self._call(self._nv.nvmlDeviceGetCount))

    def device(self, index: int) -> NvmlDevice:
        return NvmlDevice(self._nv, index)

    def driver(self) -> dict[str, str]:
        out = {}
        with contextlib.suppress(DeviceError):
            out["driver"] = _text(self._call(self._nv.nvmlSystemGetDriverVersion))
        with contextlib.suppress(DeviceError):
            cuda = int(self._call(self._nv.nvmlSystemGetCudaDriverVersion))
            out["cuda_driver"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        return out

    def close(self) -> None:
        with contextlib.suppress(self._nv.NVMLError):
            self._nv.nvmlShutdown()
