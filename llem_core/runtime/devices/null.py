"""The device layer where no device library can start: it sees no GPU and says why."""

from __future__ import annotations

from llem_core.runtime.devices.base import Device, DeviceError


class NullDevices:
    kind = "none"
    label = "no device library"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def count(self) -> int:
        return 0

    def device(self, index: int) -> Device:
        raise DeviceError(f"GPU {index} not present: {self.reason}")

    def driver(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass
