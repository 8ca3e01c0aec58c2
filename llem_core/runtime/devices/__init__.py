"""The device layer: one interface to the GPUs, whatever library reads them.

Readiness, the experiment phases and the GPU energy meter use :func:`open_gpus` (or a
given :class:`GpuDevices`) and never a vendor library. The libraries are tried in the
order of :data:`PROVIDERS`; a new one (AMD SMI, a DCGM exporter) is one module with a
:class:`GpuDevices` class, registered with :func:`register`. Nothing here imports a vendor
library until a GPU is asked about (DAG files are parsed without NVML).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from llem_core.runtime.devices.base import (
    Device,
    DeviceError,
    DeviceUnavailable,
    GpuDevices,
    Memory,
)
from llem_core.runtime.devices.null import NullDevices

Opener = Callable[[], GpuDevices]


def _nvml() -> GpuDevices:
    from llem_core.runtime.devices.nvml import NvmlDevices

    return NvmlDevices()


# name -> how to open it; tried in order, the first that starts is used.
PROVIDERS: dict[str, Opener] = {"nvml": _nvml}


def register(name: str, opener: Opener) -> None:
    """Try ``opener`` before the libraries already known (a deployment's choice wins)."""
    rest = {k: v for k, v in PROVIDERS.items() if k != name}
    PROVIDERS.clear()
    PROVIDERS.update({name: opener, **rest})


def unregister(name: str) -> None:
    PROVIDERS.pop(name, None)


def open_gpus() -> GpuDevices:
    """The first device library that starts; where none does, :class:`NullDevices`
    (no GPU) with every library's reason."""
    reasons = []
    for opener in list(PROVIDERS.values()):
        try:
            return opener()
        except DeviceUnavailable as exc:
            reasons.append(str(exc))
    return NullDevices("; ".join(reasons) or "no device library is registered")


@contextmanager
def gpus_open() -> Iterator[GpuDevices]:
    devices = open_gpus()
    try:
        yield devices
    finally:
        devices.close()


def temperatures(indices: list[int]) -> list[float]:
    """The temperatures of GPUs ``indices`` now; raises DeviceError when one is unreadable
    or absent."""
    with gpus_open() as devices:
        count = devices.count()
        missing = [i for i in indices if i >= count]
        if missing:
            raise DeviceError(f"GPU {missing} not present ({count} GPUs)")
        return [devices.device(i).temperature_c() for i in indices]


__all__ = ["PROVIDERS", "Device", "DeviceError", "DeviceUnavailable", "GpuDevices", "Memory",
           "NullDevices", "gpus_open", "open_gpus", "register", "temperatures", "unregister"]
