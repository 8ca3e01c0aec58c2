"""One experiment, measured: provenance -> idle baseline -> load -> warmup -> window -> result.

The result file is written atomically and only when everything succeeded; a failure
raises :class:`ExperimentError` with a one-line reason and leaves no file behind.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from llem_core.backends.base import BackendError, BatchTiming, get_backend
from llem_core.backends.prompts import load_texts
from llem_core.energy import EnergyReading, MeterUnavailable, open_meter
from llem_core.energy.base import Baseline
from llem_core.energy.trace import baseline_adjusted, relative_difference
from llem_core.grid import conflicts
from llem_core.health import Thresholds, wait_until_ready
from llem_core.latency import RequestTimeline, compute
from llem_core.results import (
    EnergyResult,
    ExperimentResult,
    Metrics,
    PerRequest,
    Provenance,
    RunSpec,
    write_result,
)
from llem_core.warmup import warm_up

# Counter-vs-polling agreement is only judged on windows long enough for both to settle.
AGREEMENT_MIN_WINDOW_S = 10.0
AGREEMENT_MAX_REL_DIFF = 0.05
MIN_COUNTER_PERIODS = 10


class ExperimentError(RuntimeError):
    """An experiment that cannot produce a trustworthy result; the message is one line."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def request_timelines(timings: list[BatchTiming]) -> list[RequestTimeline]:
    """Per request: its batch's start and the times of its own tokens (up to its EOS)."""
    out = []
    for t in timings:
        for n in t.output_lengths:
            out.append(RequestTimeline(submitted=t.submitted, token_times=t.step_times[:n]))
    return out


def energy_result(reading: EnergyReading | None, baseline: Baseline | None, output_tokens: int,
                  requests: int, note: str | None, source: str) -> EnergyResult:
    """Energy figures of a window: raw and baseline-adjusted side by side, with flags."""
    if reading is None:
        return EnergyResult(source="none", note=note)
    flags = []
    adjusted = None
    if baseline is not None:
        adjusted = baseline_adjusted(reading.joules, baseline.watts, reading.window_s)
        if adjusted < 0:
            flags.append("adjusted energy is negative: idle baseline exceeds the window's power")
    rel = None
    if reading.polled_joules is not None and source == "nvml_counter":
        rel = relative_difference(reading.joules, reading.polled_joules)
        if rel is not None and reading.window_s >= AGREEMENT_MIN_WINDOW_S \
                and rel > AGREEMENT_MAX_REL_DIFF:
            flags.append(f"energy counter and power polling differ by {rel:.1%} "
                         f"(> {AGREEMENT_MAX_REL_DIFF:.0%})")
    period = reading.counter_update_period_s
    if period and reading.window_s < MIN_COUNTER_PERIODS * period:
        flags.append(f"window of {reading.window_s:.2f} s is shorter than {MIN_COUNTER_PERIODS} "
                     f"counter updates ({period:.3f} s each): energy is imprecise")
    for dev, th in reading.thermal.items():
        if isinstance(th, dict) and th.get("throttle_reasons"):
            flags.append(f"{dev} throttled: {', '.join(th['throttle_reasons'])}")
    return EnergyResult(
        source=reading.source, note=note, raw_j=reading.joules,
        baseline_w=baseline.watts if baseline else None,
        baseline_s=baseline.seconds if baseline else None,
        baseline_source=baseline.source if baseline else None,
        adjusted_j=adjusted,
        raw_j_per_output_token=reading.joules / output_tokens if output_tokens else None,
        adjusted_j_per_output_token=(adjusted / output_tokens
                                     if adjusted is not None and output_tokens else None),
        raw_j_per_request=reading.joules / requests if requests else None,
        window_s=reading.window_s, per_device_j=reading.per_device_j,
        polled_j=reading.polled_joules, counter_vs_polled_rel_diff=rel,
        polled_samples=reading.polled_samples,
        counter_update_period_s=reading.counter_update_period_s,
        thermal=reading.thermal, flags=flags)


def baseline_band_flag(baseline_c: float | None, thermal: dict[str, Any],
                       band_c: float | None) -> str | None:
    """Idle power rises with temperature: flag a baseline taken far from the window's
    start temperature (hottest GPU), since subtracting it would bias adjusted energy."""
    starts = [t.get("temperature_start_c") for t in thermal.values() if isinstance(t, dict)]
    starts = [s for s in starts if s is not None]
    if baseline_c is None or band_c is None or not starts:
        return None
    start = max(starts)
    if abs(start - baseline_c) > band_c:
        return (f"idle baseline taken at {baseline_c:.0f} C but the window started at "
                f"{start:.0f} C (band {band_c:.0f} C): adjusted energy may be biased")
    return None


def _baseline(meter: Any, cfg: Any, hardware: dict[str, Any],
              log: Callable[[str], None]) -> tuple[Baseline, float | None]:
    """Idle power before the model loads: reused from the per-GPU cache when recent and
    taken at a similar temperature, else measured (and cached)."""
    from llem_core.energy import baseline_cache

    key = "+".join(str(g.get("uuid") or g.get("index")) for g in hardware.get("gpus", [])) \
        or meter.source
    temperature = None
    if meter.source.startswith("nvml"):
        try:
            from llem_core.health import read_gpus

            temperature = max(s.temperature_c for s in read_gpus(cfg.gpus))
        except Exception:
            temperature = None
    e = cfg.energy
    cached = baseline_cache.load(key, e.baseline_cache_s, temperature, e.baseline_band_c)
    if cached is not None:
        log(f"reusing idle baseline {cached[0].watts:.1f} W measured {cached[1]:.0f} s ago")
        return cached
    log(f"measuring idle baseline for {e.baseline_s} s")
    baseline = meter.idle(e.baseline_s)
    baseline.temperature_c = temperature
    if e.baseline_cache_s > 0:
        baseline_cache.store(key, baseline, temperature)
    return baseline, None


def run(spec: RunSpec, out_path: str | Path | None = None,
        log: Callable[[str], None] = lambda _m: None) -> ExperimentResult:
    """Run one experiment and, if ``out_path`` is given, write its result atomically."""
    cfg = spec.config
    problems = conflicts(cfg)
    if problems:
        raise ExperimentError(f"configuration {spec.name!r} cannot run: {'; '.join(problems)}")
    started = _now()
    timings_s: dict[str, float] = {}
    health = None
    if spec.health_check:
        hc = spec.health_check
        log(f"waiting for GPU readiness (up to {hc.get('timeout_s', 600)} s)")
        health = wait_until_ready(
            cfg.gpus, Thresholds(hc.get("max_temperature_c", 80.0),
                                 hc.get("max_memory_used_pct", 10.0),
                                 hc.get("allow_foreign_processes", False)),
            timeout_s=float(hc.get("timeout_s", 600.0)),
            poll_s=float(hc.get("poll_s", 5.0)))
    try:
        backend = get_backend(cfg)
    except BackendError as exc:
        raise ExperimentError(str(exc)) from exc
    try:
        meter = open_meter(cfg.energy, cfg.gpus, backend.device.startswith("cuda"))
    except MeterUnavailable as exc:
        raise ExperimentError(f"energy meter {cfg.energy.meter}: {exc}") from exc
    warnings: list[str] = []
    try:
        hardware = meter.hardware()
        on_gpu = meter.source.startswith("nvml")
        if on_gpu and cfg.energy.start_temperature_max_c is not None:
            log(f"waiting until the GPU is at most {cfg.energy.start_temperature_max_c} C")
            start_wait = wait_until_ready(
                cfg.gpus, Thresholds(cfg.energy.start_temperature_max_c, 100.0, True),
                timeout_s=cfg.energy.start_wait_s, poll_s=2.0)
            health = {**(health or {}), "start_temperature_wait": start_wait}
            if start_wait.get("timed_out"):
                warnings.append(f"GPU still above {cfg.energy.start_temperature_max_c} C after "
                                f"{start_wait['waited_s']:.0f} s: measured anyway")
        baseline = None
        cache_age = None
        if meter.source != "none" and cfg.energy.baseline_s > 0:
            baseline, cache_age = _baseline(meter, cfg, hardware, log)
            timings_s["baseline"] = 0.0 if cache_age is not None else baseline.seconds
        elif meter.source != "none":
            warnings.append("no idle baseline (energy.baseline_s is 0): adjusted energy is null")
        try:
            texts = load_texts(cfg.prompts)
        except (OSError, ValueError) as exc:
            raise ExperimentError(f"prompts: {exc}") from exc
        log(f"loading {cfg.model} ({cfg.dtype}) on {backend.device}")
        load_info = backend.load()
        timings_s["load"] = load_info["load_s"]
        batches = backend.prepare(texts)
        t = time.perf_counter()
        count = [0]

        def one_warmup() -> float:
            t_run = time.perf_counter()
            backend.generate(batches[count[0] % len(batches)])
            count[0] += 1
            return time.perf_counter() - t_run

        warm = warm_up(one_warmup, cfg.warmup_runs, cfg.warmup_cv_threshold,
                       cfg.warmup_cv_window, max(cfg.warmup_max_runs, cfg.warmup_runs))
        if warm.converged is False:
            warnings.append(f"warm-up did not settle: CV {warm.final_cv:.3f} > "
                            f"{cfg.warmup_cv_threshold} after {warm.runs} runs")
        timings_s["warmup"] = time.perf_counter() - t
        backend.reset_peak_memory()
        log("measuring")
        timings: list[BatchTiming] = []
        repetitions = 0
        meter.begin()
        t0 = time.perf_counter()
        while True:
            for b in batches:
                timings.append(backend.generate(b))
            repetitions += 1
            if time.perf_counter() - t0 >= cfg.energy.min_window_s:
                break
        t1 = time.perf_counter()
        reading = meter.end() if meter.source != "none" else None
        window = t1 - t0
        peak, peak_src = backend.peak_memory()
        versions = backend.versions()
    except BackendError as exc:
        raise ExperimentError(str(exc)) from exc
    finally:
        meter.close()
        backend.close()

    latency = compute(request_timelines(timings))
    per_request = PerRequest(
        output_tokens=[n for t in timings for n in t.output_lengths],
        itl_count=latency.itl_counts, ttft_s=latency.ttft_each, e2e_s=latency.e2e_each)
    requests = sum(len(t.output_lengths) for t in timings)
    out_tokens = sum(sum(t.output_lengths) for t in timings)
    in_tokens = sum(sum(t.input_lengths) for t in timings)
    metrics = Metrics(
        requests=requests, input_tokens=in_tokens, output_tokens=out_tokens,
        repetitions=repetitions, window_s=window,
        output_tokens_per_s=out_tokens / window, requests_per_s=requests / window,
        ttft_s=latency.ttft_s, tpot_s=latency.tpot_s, itl_s=latency.itl_s, e2e_s=latency.e2e_s,
        peak_memory_bytes=peak, peak_memory_source=peak_src, warmup_runs=warm.runs,
        warmup_cv=warm.final_cv, warmup_converged=warm.converged,
        per_request=per_request)
    note = hardware.get("reason") if meter.source == "none" else None
    energy = energy_result(reading, baseline, out_tokens, requests, note, meter.source)
    energy.baseline_cache_age_s = cache_age
    if baseline is not None:
        energy.baseline_temperature_c = baseline.temperature_c
        band_flag = baseline_band_flag(baseline.temperature_c, energy.thermal,
                                       cfg.energy.baseline_band_c)
        if band_flag:
            energy.flags.append(band_flag)
    timings_s["window"] = window
    provenance = Provenance(
        llem_version=_version("llem-airflow") or "unknown",
        host=socket.gethostname(), platform=platform.platform(),
        python=sys.version.split()[0],
        libraries={**versions, "nvidia-ml-py": _version("nvidia-ml-py")},
        device=backend.device, hardware={**hardware, "model": load_info},
        started_at=started, finished_at=_now(), timings_s=timings_s,
        # Set by the experiment image and the Docker runner (/.dockerenv is unreliable:
        # the worker itself may run in a container).
        in_container=os.environ.get("LLEM_IN_CONTAINER") == "1")
    result = ExperimentResult(
        campaign=spec.campaign, run_id=spec.run_id, name=spec.name,
        config_hash=spec.config_hash, cycle=spec.cycle, position=spec.position, config=cfg,
        metrics=metrics, energy=energy, provenance=provenance, health=health,
        warnings=warnings + energy.flags)
    if out_path is not None:
        write_result(result, out_path)
    return result
