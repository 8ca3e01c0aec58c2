"""A simulated NVML, importable as ``pynvml`` (put this folder first on sys.path).

A GPU at a constant power whose total-energy counter starts at a large since-boot value
and advances every FAKE_NVML_PERIOD_S, like a real one. Configured by environment
variables, read at import:

- FAKE_NVML_COUNTER_W (200): the power the energy counter accumulates.
- FAKE_NVML_POWER_W (= counter): the power that power reads report.
- FAKE_NVML_OFFSET_MJ (988122000): the counter at import (the energy since boot).
- FAKE_NVML_PERIOD_S (0.1): how often the counter updates.
- FAKE_NVML_FAIL_COUNTER: counter reads that raise NVMLError, by ordinal ("4,6-8");
  FAKE_NVML_ZERO_COUNTER: counter reads that return 0. Ordinals count the reads made
  outside llem's update-period detection (a burst of reads whose number depends on
  timing): 1 = the meter's first read, then two per window (start, end), plus retries.
- FAKE_NVML_FAIL_POWER_EVERY: every n-th power read raises NVMLError.
- FAKE_NVML_LOG: a file that gets one JSON line per counter read (ordinal, value, ok).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import types


def _ordinals(text: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


_env = os.environ.get
COUNTER_W = float(_env("FAKE_NVML_COUNTER_W", "200"))
POWER_W = float(_env("FAKE_NVML_POWER_W", str(COUNTER_W)))
OFFSET_MJ = int(_env("FAKE_NVML_OFFSET_MJ", "988122000"))
PERIOD_S = float(_env("FAKE_NVML_PERIOD_S", "0.1"))
FAIL_COUNTER = _ordinals(_env("FAKE_NVML_FAIL_COUNTER", ""))
ZERO_COUNTER = _ordinals(_env("FAKE_NVML_ZERO_COUNTER", ""))
FAIL_POWER_EVERY = int(_env("FAKE_NVML_FAIL_POWER_EVERY", "0"))
LOG = _env("FAKE_NVML_LOG")

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_FI_DEV_POWER_INSTANT = 186
NVML_SUCCESS = 0

_T0 = time.monotonic()
_lock = threading.Lock()
_state = {"counter_reads": 0, "power_reads": 0}


class NVMLError(Exception):
    pass


def _in_detection() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "detect_update_period":
            return True
        frame = frame.f_back
    return False


def _log(entry: dict) -> None:
    if LOG:
        with open(LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")


def counter_at(elapsed_s: float) -> int:
    """The counter (mJ) after ``elapsed_s`` seconds: it only moves at each update."""
    ticks = int(elapsed_s / PERIOD_S)
    return OFFSET_MJ + round(ticks * PERIOD_S * COUNTER_W * 1000)


def nvmlDeviceGetTotalEnergyConsumption(handle: int) -> int:
    value = counter_at(time.monotonic() - _T0)
    if _in_detection():
        return value
    with _lock:
        _state["counter_reads"] += 1
        n = _state["counter_reads"]
    if n in FAIL_COUNTER:
        _log({"n": n, "ok": False, "value": None})
        raise NVMLError("simulated: GPU is lost")
    if n in ZERO_COUNTER:
        value = 0
    _log({"n": n, "ok": value > 0, "value": value})
    return value


def nvmlDeviceGetPowerUsage(handle: int) -> int:
    with _lock:
        _state["power_reads"] += 1
        n = _state["power_reads"]
    if FAIL_POWER_EVERY and n % FAIL_POWER_EVERY == 0:
        raise NVMLError("simulated: power read failed")
    return int(POWER_W * 1000)


def nvmlDeviceGetFieldValues(handle: int, ids: list[int]) -> list:
    raise NVMLError("simulated: field values not supported")


def nvmlInit() -> None:
    pass


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return 1


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    return index


def nvmlDeviceGetTemperature(handle: int, kind: int) -> int:
    return 45


def nvmlDeviceGetClockInfo(handle: int, kind: int) -> int:
    return 1400


def nvmlDeviceGetCurrentClocksEventReasons(handle: int) -> int:
    return 0


def nvmlSystemGetDriverVersion() -> str:
    return "999.1"


def nvmlSystemGetCudaDriverVersion() -> int:
    return 12040


def nvmlDeviceGetName(handle: int) -> bytes:
    return b"Simulated GPU"


def nvmlDeviceGetUUID(handle: int) -> str:
    return "GPU-simulated"


def nvmlDeviceGetMemoryInfo(handle: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(total=80 * 2**30, used=2**28)


def nvmlDeviceGetEnforcedPowerLimit(handle: int) -> int:
    return 300_000


def nvmlDeviceGetComputeRunningProcesses(handle: int) -> list:
    return []
