"""The device layer's interface: what llem asks of a GPU, whatever library answers.

Readiness (:mod:`llem_core.runtime.health`), the experiment phases and the GPU energy meter ask
these questions and nothing else, so a new source (AMD SMI, a DCGM exporter) is one module
implementing :class:`GpuDevices` and :class:`Device`. A read that fails raises
:class:`DeviceError` (never a library's own exception): each caller decides whether that
is fatal (readiness) or a skipped sample (the meter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class DeviceUnavailable(RuntimeError):
    """The device library cannot start here (not installed, no driver, no GPU)."""


class DeviceError(RuntimeError):
    """One read of one device failed (the device stays open; a later read may work)."""


@dataclass(frozen=True)
class Memory:
    total_bytes: int
    used_bytes: int

    @property
    def used_pct(self) -> float:
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes else 0.0


class Device(Protocol):
    """One GPU, by the index the layer gives it (PCI order, as pools and locks use)."""

    index: int

    def name(self) -> str: ...

    def uuid(self) -> str: ...

    def temperature_c(self) -> float: ...

    def memory(self) -> Memory: ...

    def power_limit_w(self) -> float: ...

    def compute_pids(self) -> list[int]:
        """The processes computing on the GPU now."""
        ...

    def power_w(self) -> float:
        """The power drawn now, in watts."""
        ...

    def power_is_instant(self) -> bool:
        """Whether :meth:`power_w` is an instant reading (False: averaged by the driver)."""
        ...

    def energy_mj(self) -> int:
        """The energy counter in millijoules since an epoch of the device's (driver load)."""
        ...

    def sm_clock_mhz(self) -> float: ...

    def throttle_reasons(self) -> list[str]:
        """Why the GPU is slowed now (names such as ``sw_power_cap``; empty: it is not)."""
        ...


class GpuDevices(Protocol):
    """The GPUs one device library sees, open until :meth:`close`."""

    kind: str  # a short lower-case name: the energy meter's source prefix ("nvml")
    label: str  # the library's name in messages ("NVML")

    def count(self) -> int: ...

    def device(self, index: int) -> Device:
        """GPU ``index``; raises DeviceError when it is not present."""
        ...

    def driver(self) -> dict[str, str]:
        """The driver's versions (``driver``, and ``cuda_driver`` where there is one)."""
        ...

    def close(self) -> None: ...
