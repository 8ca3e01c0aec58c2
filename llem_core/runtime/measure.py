"""One experiment, measured: the phases of :mod:`llem_core.runtime.experiment.phases` in order.

preflight -> import -> idle baseline -> load -> warm-up -> measured window -> result.
The result file is written atomically and only when everything succeeded; a failure
raises :class:`ExperimentError` with a one-line reason and leaves no file behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llem_core.analysis.results import ExperimentResult, Metrics, Provenance, RunSpec, write_result
from llem_core.campaign.config import ExperimentConfig
from llem_core.runtime.backends.base import BackendError
from llem_core.runtime.energy.base import Baseline
from llem_core.runtime.energy.result import baseline_band_flag, energy_result
from llem_core.runtime.engines import engine_for
from llem_core.runtime.experiment import phases
from llem_core.runtime.experiment.errors import ExperimentError
from llem_core.runtime.experiment.provenance import experiment_result, now, provenance
from llem_core.runtime.supervisor.warm import WarmCache

__all__ = ["ExperimentError", "run", "run_experiment"]


def _quiet(_message: str) -> None:
    pass


def run(spec: RunSpec, out_path: str | Path | None = None,
        log: Callable[[str], None] = _quiet, warm: WarmCache | None = None) -> ExperimentResult:
    """Run one experiment and, if ``out_path`` is given, write its result atomically."""
    cfg = spec.config
    if warm is not None and spec.health_check is not None:
        # a readiness check before this experiment would count the kept model's memory
        # (or the kept engine) as another workload: nothing is kept across it
        warm.release()
        warm.release_engines()
    engine = engine_for(cfg.backend)
    if engine.served:
        try:
            from llem_core.runtime.serving.experiment import run_server  # httpx only when used
        except ImportError as exc:
            raise ExperimentError(
                f"backend {cfg.backend} needs the 'serving' extra ({exc.name or exc} is missing): "
                "pip install 'llem-airflow[serving]' where the experiment runs") from None
        if warm is not None:
            warm.release()  # a loaded model is not kept beside a serving engine
        return run_server(spec, out_path, log, engines=warm.engines() if warm else None)
    started = now()
    health = phases.preflight(spec, log)
    if warm is not None:
        warm.release_engines()
    t_take = time.perf_counter()
    kept = warm.take(cfg) if warm is not None else None
    backend, import_s = (kept, 0.0) if kept is not None else phases.import_backend(cfg)
    timings_s: dict[str, float] = {"import": import_s}
    if kept is not None:  # clearing the kept model's caches and re-seeding
        timings_s["reuse"] = time.perf_counter() - t_take
    warnings: list[str] = []
    try:
        monitor = phases.open_monitor(cfg, backend.device, warnings)
    except ExperimentError:
        _release(backend, warm)
        raise
    try:
        hardware = monitor.hardware()
        waited = phases.wait_start_temperature(cfg, monitor.source, log, warnings)
        if waited is not None:
            health = {**(health or {}), "start_temperature_wait": waited}
        baseline, cache_age = phases.baseline(cfg, monitor, hardware, log, warnings)
        if baseline is not None:
            timings_s["baseline"] = 0.0 if cache_age is not None else baseline.seconds
        if kept is not None:
            work = phases.reuse(cfg, backend, warm.load_info, log)  # type: ignore[union-attr]
        else:
            work = phases.load(cfg, backend, log)
            if warm is not None:
                warm.keep(cfg, backend, work.load_info)
        timings_s["load"] = 0.0 if kept is not None else work.load_info["load_s"]
        warmup = phases.warm_up_phase(cfg, work, warnings)
        timings_s["warmup"] = sum(warmup.durations_s)
        window = phases.measured_window(cfg, work, monitor, log)
        timings_s["window"] = window.measurement.seconds
        peak, versions = backend.peak_memory(), backend.versions()
        if warm is not None and peak[1] == "process_max_rss":
            # the process's peak is never reset: in a warm worker it spans earlier runs
            peak = (peak[0], "process_max_rss (since the warm worker started: it includes "
                             "earlier experiments)")
    except BackendError as exc:
        _release(backend, warm)
        raise ExperimentError(str(exc)) from exc
    except BaseException:
        _release(backend, warm)
        raise
    finally:
        monitor.close()
        if warm is None:
            backend.close()

    prov = provenance(backend.device, {**hardware, "model": work.load_info}, versions,
                      started, timings_s, spec.isolation)
    prov.model_already_loaded = kept is not None
    result = _result(spec, phases.metrics(window, warmup, peak), window, baseline, cache_age,
                     health, warnings, prov)
    if out_path is not None:
        write_result(result, out_path)
    return result


def _release(backend: Any, warm: WarmCache | None) -> None:
    """After a failure nothing is kept: the next experiment loads afresh."""
    if warm is not None and warm.backend is backend:
        warm.release()
    elif warm is not None:
        backend.close()


def _result(spec: RunSpec, metrics: Metrics, window: phases.Window, baseline: Baseline | None,
            cache_age: float | None, health: dict[str, Any] | None, warnings: list[str],
            prov: Provenance) -> ExperimentResult:
    """The result phase: energy arithmetic over the window, flags, and the record."""
    reading = window.measurement.reading
    assert reading is not None  # the monitor always attaches the meter's reading
    energy = energy_result(reading, baseline, metrics.output_tokens, metrics.requests)
    energy.baseline_cache_age_s = cache_age
    if baseline is not None:
        band = baseline_band_flag(baseline.temperature_c, energy.thermal,
                                  spec.config.energy.baseline_band_c)
        if band:
            energy.flags.append(band)
    return experiment_result(spec, metrics, energy, prov, health, warnings + energy.flags)


def run_experiment(config: ExperimentConfig, out_path: str | Path | None = None, *,
                   log: Callable[[str], None] = _quiet, **spec: Any) -> ExperimentResult:
    """Run and measure one experiment from Python, without the CLI or Airflow.

    ``spec`` takes the other RunSpec fields (campaign, run_id, name, cycle, position,
    health_check); name and config_hash default to the configuration's.
    """
    return run(RunSpec(config=config, **spec), out_path, log)
