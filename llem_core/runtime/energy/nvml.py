"""GPU energy through NVML: the device-neutral :class:`GpuMeter` on NVML's devices."""

from __future__ import annotations

from llem_core.runtime.devices import DeviceUnavailable
from llem_core.runtime.energy.base import MeterUnavailable
from llem_core.runtime.energy.gpu import GpuMeter


class NvmlMeter(GpuMeter):
    """Meters the GPUs given by index (as NVML numbers them in this process)."""

    def __init__(self, gpus: list[int], poll_interval_s: float = 0.1) -> None:
        from llem_core.runtime.devices.nvml import NvmlDevices  # NVML loads only to meter a GPU

        try:
            devices = NvmlDevices()
        except DeviceUnavailable as exc:
            raise MeterUnavailable(str(exc)) from exc
        super().__init__(devices, gpus, poll_interval_s)
