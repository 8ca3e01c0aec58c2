"""Starting NVML: the one place that imports and initialises nvidia-ml-py."""

from __future__ import annotations

from types import ModuleType


def init_nvml(error: type[Exception]) -> ModuleType:
    """Import and initialise NVML; raise ``error`` with the reason where it cannot start.

    The caller calls ``nvmlShutdown()`` on the returned module when done.
    """
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise error(f"nvidia-ml-py is not installed: {exc}") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise error(f"NVML unavailable (no NVIDIA driver/GPU?): {exc}") from exc
    return pynvml
