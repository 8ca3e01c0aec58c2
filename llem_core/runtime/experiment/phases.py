"""The phases of one experiment, in order, each callable alone.

preflight -> import_backend -> open_monitor -> wait_start_temperature -> baseline ->
load -> warm_up_phase -> measured_window -> (metrics, energy, provenance: the result).
Problems that make a run untrustworthy raise :class:`ExperimentError`; softer ones are
appended to the ``warnings`` list a phase is given.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llem_core.analysis.results import Metrics, PerRequest, RunSpec
from llem_core.campaign.config import ExperimentConfig, HealthCheck
from llem_core.campaign.grid import conflicts
from llem_core.runtime.backends.base import BackendError, BatchTiming, InferenceBackend, get_backend
from llem_core.runtime.backends.prompts import load_texts
from llem_core.runtime.devices import temperatures
from llem_core.runtime.energy import (
    EnergyMonitor,
    Measurement,
    MeterUnavailable,
    baseline_cache,
    open_meter,
)
from llem_core.runtime.energy.base import Baseline, measure_idle
from llem_core.runtime.engines import engine_for
from llem_core.runtime.experiment.errors import ExperimentError
from llem_core.runtime.experiment.import_gc import imports_paused
from llem_core.runtime.health import Thresholds, wait_until_ready
from llem_core.runtime.latency import RequestTimeline, compute
from llem_core.runtime.warmup import WarmupReport, warm_up

Log = Callable[[str], None]
MEASURED = "measured"  # the name of the measured window in the monitor


def check_model_path(cfg: ExperimentConfig) -> None:
    if not cfg.is_local_model():
        return
    path = Path(cfg.model).expanduser()
    if not path.exists():
        raise ExperimentError(f"model path {cfg.model} does not exist")
    if engine_for(cfg.backend).model_is_file:
        if not path.is_file():
            raise ExperimentError(f"model path {cfg.model} is not a file (backend "
                                  f"{cfg.backend} loads one model file)")
    elif not path.is_dir():
        raise ExperimentError(f"model path {cfg.model} is not a folder (a saved model is one)")


def wait_for_health(hc: HealthCheck, gpus: list[int], log: Log) -> dict[str, Any]:
    log(f"waiting for GPU readiness (up to {hc.timeout_s} s)")
    return wait_until_ready(
        gpus, Thresholds(hc.max_temperature_c, hc.max_memory_used_pct,
                         hc.allow_foreign_processes),
        timeout_s=hc.timeout_s, poll_s=hc.poke_interval_s)


def preflight(spec: RunSpec, log: Log) -> dict[str, Any] | None:
    """Refuse a configuration that cannot run; wait for GPU readiness when asked to."""
    problems = conflicts(spec.config)
    if problems:
        raise ExperimentError(f"configuration {spec.name!r} cannot run: {'; '.join(problems)}")
    check_model_path(spec.config)
    if spec.health_check is None:
        return None
    return wait_for_health(spec.health_check, spec.config.gpus, log)


def import_backend(cfg: ExperimentConfig) -> tuple[InferenceBackend, float]:
    """The backend with its libraries and the model's code imported, and how long that took
    (kept out of the load time)."""
    # CUDA numbers GPUs fastest-first unless told otherwise; NVML, the pools and the
    # readiness checks number them by PCI bus: make the backend agree before it loads CUDA.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    t0 = time.perf_counter()
    try:
        with imports_paused():
            backend = get_backend(cfg)
            backend.import_modules()
    except BackendError as exc:
        raise ExperimentError(str(exc)) from exc
    return backend, time.perf_counter() - t0


def open_monitor(cfg: ExperimentConfig, device: str, warnings: list[str]) -> EnergyMonitor:
    on_gpu = device.startswith("cuda")
    try:
        meter = open_meter(cfg.energy, cfg.gpus, on_gpu)
    except MeterUnavailable as exc:
        raise ExperimentError(f"energy meter {cfg.energy.meter}: {exc}") from exc
    if meter.source.startswith("nvml") and not on_gpu:
        warnings.append(f"energy.meter nvml meters GPUs {cfg.gpus} but the model runs on "
                        f"{device}: the energy is the GPUs', not the workload's")
    return EnergyMonitor(meter)


def wait_start_temperature(cfg: ExperimentConfig, source: str, log: Log,
                           warnings: list[str]) -> dict[str, Any] | None:
    limit = cfg.energy.start_temperature_max_c
    if not source.startswith("nvml") or limit is None:
        return None
    log(f"waiting until the GPU is at most {limit} C")
    waited = wait_until_ready(cfg.gpus, Thresholds(limit, 100.0, True),
                              timeout_s=cfg.energy.start_wait_s, poll_s=2.0)
    if waited.get("timed_out"):
        warnings.append(f"GPU still above {limit} C after {waited['waited_s']:.0f} s: "
                        "measured anyway")
    return waited


def gpu_temperature(gpus: list[int]) -> float | None:
    """The hottest metered GPU now; None when unreadable (the baseline is then not banded)."""
    try:
        return max(temperatures(gpus))
    except Exception:
        return None


def baseline(cfg: ExperimentConfig, monitor: EnergyMonitor, hardware: dict[str, Any],
             log: Log, warnings: list[str]) -> tuple[Baseline | None, float | None]:
    """Idle power before the model loads (cached per GPU when asked), and a cached one's age."""
    if monitor.source == "none":
        return None, None
    if cfg.energy.baseline_s <= 0:
        warnings.append("no idle baseline (energy.baseline_s is 0): adjusted energy is null")
        return None, None
    temperature = gpu_temperature(cfg.gpus) if monitor.source.startswith("nvml") else None
    key = baseline_cache.device_key(hardware, monitor.source)
    try:
        # The meter's own measure_idle raises with the reason; the monitor's returns None.
        found, age = baseline_cache.obtain(key, cfg.energy, temperature,
                                           lambda s: measure_idle(monitor.meter, s), log)
    except MeterUnavailable as exc:
        warnings.append(f"no idle baseline: {exc}: adjusted energy is null")
        return None, None
    monitor.baseline = found
    return found, age


@dataclass
class Workload:
    """The loaded model and the prepared batches of prompts."""

    backend: InferenceBackend
    batches: list[Any]
    load_info: dict[str, Any]


def load(cfg: ExperimentConfig, backend: InferenceBackend, log: Log) -> Workload:
    try:
        texts = load_texts(cfg.prompts)
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"prompts: {exc}") from exc
    log(f"loading {cfg.model} ({cfg.dtype}) on {backend.device}")
    info = backend.load()
    return Workload(backend, backend.prepare(texts), info)


def reuse(cfg: ExperimentConfig, backend: InferenceBackend, load_info: dict[str, Any],
          log: Log) -> Workload:
    """The model an earlier experiment loaded (isolation warm), with this one's prompts."""
    try:
        texts = load_texts(cfg.prompts)
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"prompts: {exc}") from exc
    log(f"reusing the loaded {cfg.model} ({cfg.dtype}) on {backend.device}")
    return Workload(backend, backend.prepare(texts), {**load_info, "already_loaded": True})


def warm_up_phase(cfg: ExperimentConfig, work: Workload, warnings: list[str]) -> WarmupReport:
    count = [0]

    def one() -> float:
        t = time.perf_counter()
        work.backend.generate(work.batches[count[0] % len(work.batches)])
        count[0] += 1
        return time.perf_counter() - t

    warm = warm_up(one, cfg.warmup_runs, cfg.warmup_cv_threshold, cfg.warmup_cv_window,
                   max(cfg.warmup_max_runs, cfg.warmup_runs))
    if warm.converged is False:
        warnings.append(f"warm-up did not settle: CV {warm.final_cv:.3f} > "
                        f"{cfg.warmup_cv_threshold} after {warm.runs} runs")
    return warm


@dataclass
class Window:
    """What ran inside the measured window, and its measurement."""

    timings: list[BatchTiming]
    repetitions: int
    measurement: Measurement


def measured_window(cfg: ExperimentConfig, work: Workload, monitor: EnergyMonitor,
                    log: Log) -> Window:
    """All batches, repeated until the window lasts ``energy.min_window_s``."""
    work.backend.reset_peak_memory()
    log("measuring")
    timings: list[BatchTiming] = []
    repetitions = 0
    monitor.begin_window(MEASURED)
    t0 = time.perf_counter()
    try:
        while True:
            timings.extend(work.backend.generate(b) for b in work.batches)
            repetitions += 1
            if time.perf_counter() - t0 >= cfg.energy.min_window_s:
                break
    finally:
        measurement = monitor.end_window(MEASURED)
    return Window(timings, repetitions, measurement)


def request_timelines(timings: list[BatchTiming]) -> list[RequestTimeline]:
    """Per request: its batch's start and the times of its own tokens (up to its EOS)."""
    return [RequestTimeline(submitted=t.submitted, token_times=t.step_times[:n])
            for t in timings for n in t.output_lengths]


def metrics(window: Window, warm: WarmupReport, peak: tuple[int | None, str]) -> Metrics:
    timings, seconds = window.timings, window.measurement.seconds
    latency = compute(request_timelines(timings))
    requests = sum(len(t.output_lengths) for t in timings)
    out_tokens = sum(sum(t.output_lengths) for t in timings)
    return Metrics(
        requests=requests, input_tokens=sum(sum(t.input_lengths) for t in timings),
        output_tokens=out_tokens, repetitions=window.repetitions, window_s=seconds,
        output_tokens_per_s=out_tokens / seconds, requests_per_s=requests / seconds,
        ttft_s=latency.ttft_s, tpot_s=latency.tpot_s, itl_s=latency.itl_s, e2e_s=latency.e2e_s,
        peak_memory_bytes=peak[0], peak_memory_source=peak[1], warmup_runs=warm.runs,
        warmup_cv=warm.final_cv, warmup_converged=warm.converged,
        per_request=PerRequest(
            output_tokens=[n for t in timings for n in t.output_lengths],
            itl_count=latency.itl_counts, ttft_s=latency.ttft_each, e2e_s=latency.e2e_each))
