"""GPU readiness: is the GPU cool, nearly empty and free of other people's processes?

The decision (:func:`assess`) is pure; :func:`read_gpus` reads the device layer
(:mod:`llem_core.runtime.devices`), never a vendor library. The Airflow sensor
between cycles and the runner's optional pre-experiment wait both use these.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from llem_core.runtime.devices import Device, DeviceError, NullDevices, gpus_open


@dataclass
class GpuState:
    index: int
    name: str
    temperature_c: float
    memory_used_pct: float
    compute_pids: list[int] = field(default_factory=list)


@dataclass
class Thresholds:
    max_temperature_c: float = 80.0
    max_memory_used_pct: float = 10.0
    allow_foreign_processes: bool = False
    own_pids: frozenset[int] = frozenset()


@dataclass
class Readiness:
    ready: bool
    reasons: list[str]
    gpus: list[dict[str, Any]]
    no_gpu: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(states: list[GpuState], th: Thresholds) -> Readiness:
    reasons = []
    for s in states:
        if s.temperature_c >= th.max_temperature_c:
            reasons.append(f"gpu{s.index} at {s.temperature_c:.0f} C "
                           f"(limit {th.max_temperature_c:.0f} C)")
        if s.memory_used_pct >= th.max_memory_used_pct:
            reasons.append(f"gpu{s.index} memory {s.memory_used_pct:.1f}% in use "
                           f"(limit {th.max_memory_used_pct:.1f}%)")
        foreign = [p for p in s.compute_pids if p not in th.own_pids]
        if foreign and not th.allow_foreign_processes:
            reasons.append(f"gpu{s.index} runs other compute processes: pids {foreign}")
    return Readiness(ready=not reasons, reasons=reasons, gpus=[asdict(s) for s in states])


class NoGpu(RuntimeError):
    """No device library starts or it sees no GPU: readiness checks pass at once, saying
    why."""


def read_gpus(indices: list[int] | None = None) -> list[GpuState]:
    """The state of GPUs ``indices`` (default: all) through the device layer."""
    with gpus_open() as devices:
        if isinstance(devices, NullDevices):
            raise NoGpu(devices.reason)
        count = devices.count()
        if count == 0:
            raise NoGpu(f"{devices.label} sees no GPU")
        states = []
        for i in indices if indices is not None else range(count):
            if i >= count:
                raise NoGpu(f"GPU {i} not present ({count} GPUs)")
            states.append(_state(devices.device(i)))
        return states


def _state(gpu: Device) -> GpuState:
    mem = gpu.memory()
    try:
        procs = gpu.compute_pids()
    except DeviceError:  # some drivers refuse the process list: memory use still counts
        procs = []
    return GpuState(index=gpu.index, name=gpu.name(), temperature_c=gpu.temperature_c(),
                    memory_used_pct=mem.used_pct, compute_pids=procs)


def check(indices: list[int] | None, th: Thresholds,
          reader: Callable[[list[int] | None], list[GpuState]] = read_gpus) -> Readiness:
    try:
        states = reader(indices)
    except NoGpu as exc:
        return Readiness(ready=True, reasons=[], gpus=[], no_gpu=str(exc))
    return assess(states, th)


def wait_until_ready(indices: list[int] | None, th: Thresholds, timeout_s: float,
                     poll_s: float = 5.0,
                     reader: Callable[[list[int] | None], list[GpuState]] = read_gpus,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Wait for readiness up to the timeout; never raises on timeout, reports it instead."""
    t0 = clock()
    th = Thresholds(th.max_temperature_c, th.max_memory_used_pct, th.allow_foreign_processes,
                    th.own_pids | {os.getpid()})
    while True:
        r = check(indices, th, reader)
        waited = clock() - t0
        if r.ready or waited >= timeout_s:
            out = r.as_dict()
            out.update(waited_s=waited, timed_out=not r.ready)
            return out
        sleep(min(poll_s, max(0.0, timeout_s - waited)))
