"""The phases of an experiment on a served engine (``backend: server``, ``vllm``, ...).

preflight -> open meter -> idle baseline (launched servers only) -> launch and wait healthy
-> warm-up requests -> loaded baseline -> the load (meter marks and engine gauges sampled)
-> stop the server's group -> steady-state window, energy, attribution -> result.
The server is stopped whatever happens; its log is kept next to the result. What differs
between engines (argv, environment, health and metrics paths, version, whether a running
engine is kept) is the engine's (:mod:`llem_core.runtime.engines`).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llem_core.analysis.results import EnergyResult, ExperimentResult, RunSpec, write_result
from llem_core.campaign.config import BuiltinPrompts, ExperimentConfig
from llem_core.runtime.backends.prompts import load_texts
from llem_core.runtime.energy import EnergyMonitor, MeterUnavailable, open_meter
from llem_core.runtime.energy.base import Baseline, EnergyMeter, measure_idle
from llem_core.runtime.energy.result import energy_result
from llem_core.runtime.engines import ServedEngine, engine_for
from llem_core.runtime.engines.base import Served
from llem_core.runtime.engines.settings import LoadSettings
from llem_core.runtime.experiment import phases
from llem_core.runtime.experiment.errors import ExperimentError
from llem_core.runtime.experiment.provenance import experiment_result, now, provenance, version
from llem_core.runtime.serving import summary
from llem_core.runtime.serving.attribution import MarkSampler
from llem_core.runtime.serving.client import RequestRecord, request_body, run_load
from llem_core.runtime.serving.engines import EngineCache, KeptEngine
from llem_core.runtime.serving.metrics import ServingMetrics
from llem_core.runtime.serving.process import (
    ServerError,
    ServerProcess,
    free_port,
    render_argv,
    terminate_as_exception,
    wait_http_ok,
)
from llem_core.runtime.serving.prometheus import GaugeSampler
from llem_core.runtime.serving.window import steady_window, target_occupancy

Log = Callable[[str], None]


@dataclass
class Warm:
    """Isolation warm: the cache of running engines, this launch's key in it, the engine an
    earlier experiment left running for it (if any), and this run's idle baseline (kept with
    a newly started engine for the experiments that reuse it)."""

    cache: EngineCache
    key: tuple[Any, ...]
    kept: KeptEngine | None
    idle: Baseline | None = None


@dataclass
class ServedRun:
    """What the served phases hand to the result: the server reached, the baselines, the
    load's records and samples."""

    url: str = ""
    log: str | None = None
    startup_s: float | None = None
    command: list[str] | None = None
    engine_version: str | None = None
    reused: bool = False
    idle: Baseline | None = None
    idle_note: str | None = None
    idle_age: float | None = None
    loaded: Baseline | None = None
    loaded_note: str | None = None
    records: list[RequestRecord] = field(default_factory=list)
    t0: float = 0.0
    t1: float = 0.0
    marks: list[float] = field(default_factory=list)
    gauges: GaugeSampler | None = None


def _quiet(_m: str) -> None:
    pass


def log_path_for(out_path: str | Path | None) -> Path:
    """The server's log: next to the result file, else in a fresh temporary folder."""
    if out_path is not None:
        p = Path(out_path)
        return p.with_name(p.stem + ".server.log")
    return Path(tempfile.mkdtemp(prefix="llem-server-")) / "server.log"


def bodies_for(cfg: ExperimentConfig, server: Served,
               load: LoadSettings) -> tuple[list[dict], list[dict]]:
    """The measured requests' bodies (prompts reused in order when more requests than
    prompts), and the warm-up's, on other prompts so that no prefix cache favours the load."""
    try:
        texts = load_texts(cfg.prompts)
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"prompts: {exc}") from exc
    long = next(((i, len(t.split())) for i, t in enumerate(texts)
                 if len(t.split()) > cfg.max_input_tokens), None)
    if long is not None:
        # sent whole, it would fail on an engine whose context is sized by max_input_tokens
        raise ExperimentError(
            f"prompts: prompt {long[0] + 1} has {long[1]} words (at least as many tokens), "
            f"more than max_input_tokens ({cfg.max_input_tokens}); backend {cfg.backend} "
            "sends prompts whole: raise max_input_tokens or shorten the prompts")
    n = load.num_requests or len(texts)
    length = min(cfg.prompts.length if isinstance(cfg.prompts, BuiltinPrompts) else 64,
                 cfg.max_input_tokens)
    warm = load_texts(BuiltinPrompts(count=max(load.warmup_requests, 1), length=length,
                                     seed=cfg.prompts.seed + 1 if isinstance(
                                         cfg.prompts, BuiltinPrompts) else 1))

    def body(text: str) -> dict:
        return request_body(server, cfg.model, text, cfg.max_output_tokens, load.fixed_output,
                            cfg.decoding.temperature)

    return ([body(texts[i % len(texts)]) for i in range(n)],
            [body(t) for t in warm[:load.warmup_requests]])


def _check(records: list[RequestRecord], what: str) -> None:
    failed = [r for r in records if r.error]
    if failed:
        raise ExperimentError(f"{len(failed)} of {len(records)} {what} requests failed "
                              f"(first: {failed[0].error})")


async def _load_with_gauges(url: str, server: Served, load: LoadSettings,
                            bodies: list[dict], gauges: GaugeSampler | None
                            ) -> tuple[list[RequestRecord], float, float]:
    task = asyncio.create_task(gauges.run()) if gauges else None
    await asyncio.sleep(0)  # the sampler builds its client now, not after the first request
    try:
        return await run_load(url, server, load, bodies)
    finally:
        if gauges and task:
            gauges.stop()
            await task


def loaded_baseline(meter: EnergyMeter, seconds: float) -> tuple[Baseline | None, str | None]:
    if meter.source == "none":
        return None, "no energy meter"
    if seconds <= 0:
        return None, "server.loaded_baseline_s is 0"
    try:
        return measure_idle(meter, seconds), None
    except MeterUnavailable as exc:
        return None, str(exc)


def run_server(spec: RunSpec, out_path: str | Path | None = None, log: Log = _quiet,
               meter: EnergyMeter | None = None,
               engines: EngineCache | None = None) -> ExperimentResult:
    """Run one experiment on a served engine; ``meter`` replaces the configured one (tests,
    custom); ``engines`` (isolation warm) keeps a launched engine running for the next
    experiment when the engine allows it."""
    cfg = spec.config
    engine = engine_for(cfg.backend)
    if not isinstance(engine, ServedEngine):
        raise ExperimentError(f"backend {cfg.backend} is not a served engine")
    plain = engine.server(cfg)
    key = engine.keep_key(cfg, plain) if engines is not None and plain.command else None
    if engines is not None and key is None:
        engines.release()  # started and stopped here, as in the other modes
    kept = engines.take(key) if engines is not None and key is not None else None
    cache_root = kept.cache_root if kept is not None else engine.cache_root(cfg)
    warm = Warm(engines, key, kept) if engines is not None and key is not None else None
    try:
        return _run(spec, engine, out_path, log, meter, engine.server(cfg, cache_root), warm)
    finally:
        if cache_root is not None and not (engines is not None and engines.holds(cache_root)):
            shutil.rmtree(cache_root, ignore_errors=True)


def _idle(cfg: ExperimentConfig, server: Served, monitor: EnergyMonitor,
          hardware: dict[str, Any], log: Log, warnings: list[str], warm: Warm | None,
          run: ServedRun) -> None:
    """The idle baseline: carried with a kept engine, measured before one llem launches,
    not measurable for a server already running."""
    if warm is not None and warm.kept is not None:
        kept = warm.kept
        run.idle, run.idle_age = kept.idle, time.monotonic() - kept.idle_at
        run.idle_note = (f"measured {run.idle_age:.0f} s earlier, before the kept engine "
                         "started (isolation warm)") if kept.idle else \
            "not measured before the kept engine started (isolation warm)"
    elif server.command is not None:
        run.idle, _age = phases.baseline(cfg, monitor, hardware, log, warnings)
        run.idle_note = None if run.idle else "not measured (see warnings)"
        if warm is not None:
            warm.idle = run.idle  # kept with the engine for the experiments that reuse it
    else:
        run.idle_note = "server already running (server.url): not measurable"


def _run(spec: RunSpec, engine: ServedEngine, out_path: str | Path | None, log: Log,
         meter: EnergyMeter | None, server: Served, warm: Warm | None) -> ExperimentResult:
    cfg = spec.config
    load = cfg.load
    if load is None:
        raise ExperimentError(f"backend {cfg.backend} needs a load section")
    started = now()
    health = phases.preflight(spec, log)
    bodies, warm_bodies = bodies_for(cfg, server, load)
    warnings: list[str] = []
    if meter is None:
        try:
            meter = open_meter(cfg.energy, cfg.gpus, {"cuda": True, "cpu": False}.get(cfg.device))
        except MeterUnavailable as exc:
            raise ExperimentError(f"energy meter {cfg.energy.meter}: {exc}") from exc
    monitor = EnergyMonitor(meter, sync=None)
    try:
        hardware = monitor.hardware()
        run = ServedRun()
        _idle(cfg, server, monitor, hardware, log, warnings, warm, run)
        with terminate_as_exception():
            _with_server(cfg, engine, server, load, (bodies, warm_bodies), meter,
                         log_path_for(out_path), log, warm, run)
        result = _result(spec, engine, server, run, meter, hardware, health, warnings,
                         started)  # meter still open
    finally:
        monitor.close()
    if out_path is not None:
        write_result(result, out_path)
    return result


def _start(cfg: ExperimentConfig, engine: ServedEngine, server: Served, log_path: Path,
           log: Log, run: ServedRun) -> ServerProcess | None:
    """Reach the server: start it (launched) or wait for the running one (url)."""
    if server.command is None:
        run.url = str(server.url)
        wait_http_ok(run.url + server.health_path, min(server.startup_timeout_s, 30.0))
        return None
    port = server.port or free_port()
    run.url = f"http://127.0.0.1:{port}"
    argv = render_argv(server.command, port, cfg.model)
    log(f"starting server: {argv[0]} (log {log_path})")
    proc = ServerProcess(argv, log_path, server.env, server.stop_timeout_s)
    run.log = str(log_path)
    try:
        run.startup_s = proc.wait_healthy(run.url + server.health_path,
                                          server.startup_timeout_s)
    except BaseException:
        proc.stop()  # never healthy (or interrupted): the caller never gets to stop it
        raise
    run.command = argv
    run.engine_version = engine.version(run.url, server)
    return proc


def _with_server(cfg: ExperimentConfig, engine: ServedEngine, server: Served,
                 load: LoadSettings, all_bodies: tuple[list[dict], list[dict]],
                 meter: EnergyMeter, log_path: Path, log: Log, warm: Warm | None,
                 run: ServedRun) -> None:
    """Start (or reach, or reuse) the server, warm it, measure the loaded baseline and the
    load; stop it afterwards unless isolation warm keeps it."""
    bodies, warm_bodies = all_bodies
    proc: ServerProcess | None = None
    kept = warm.kept if warm is not None else None
    ok = False
    try:
        if kept is not None:
            proc, run.url = kept.proc, kept.url
            log(f"reusing the running server (isolation warm; log {kept.log})")
            run.log, run.command, run.engine_version = kept.log, kept.command, \
                kept.engine_version
            run.reused = True
            wait_http_ok(run.url + server.health_path, 30.0)
        else:
            proc = _start(cfg, engine, server, log_path, log, run)
        if load.warmup_requests:
            warmed, _, _ = asyncio.run(run_load(run.url, server, LoadSettings(pattern="burst"),
                                                warm_bodies))
            _check(warmed, "warm-up")
        run.loaded, run.loaded_note = loaded_baseline(meter, server.loaded_baseline_s)
        run.gauges = GaugeSampler(run.url + server.metrics_path, server.metrics_interval_s) \
            if server.metrics_path else None
        sampler = MarkSampler(meter, load.energy_interval_s)
        log(f"load: {load.pattern}, {len(bodies)} requests")
        sampler.start()
        try:
            run.records, run.t0, run.t1 = asyncio.run(
                _load_with_gauges(run.url, server, load, bodies, run.gauges))
        finally:
            sampler.stop()
        ok = True
    except ServerError as exc:
        raise ExperimentError(str(exc)) from exc
    finally:
        if proc is not None:
            _after(proc, ok, warm, server, run)
    _check(run.records, "measured")
    run.marks = sampler.marks


def _after(proc: ServerProcess, ok: bool, warm: Warm | None, server: Served,
           run: ServedRun) -> None:
    """Keep the engine for the next experiment (isolation warm, a load that succeeded), or
    stop it; a reused engine that failed is not kept."""
    if ok and warm is not None:
        warm.cache.keep(warm.key, warm.kept or KeptEngine(
            proc, run.url, run.command or [], run.log or "", run.engine_version,
            server.cache_root, warm.idle))
    elif warm is not None and warm.kept is not None:
        warm.cache.release()
    else:
        proc.stop()


def _gauge_summary(serving: ServingMetrics, gauges: GaugeSampler | None, w: Any) -> None:
    if gauges is None:
        serving.engine_gauges_note = "server.metrics_path null"
    elif gauges.unavailable is not None:
        serving.engine_gauges_note = gauges.unavailable
    else:
        inside = gauges.summary(w.start, w.end)
        if any(v is not None for v in inside.values()):
            serving.engine_gauges = inside
        else:
            serving.engine_gauges_note = (
                f"no /metrics sample fell inside the window (sampled every "
                f"{gauges.interval_s:g} s; {len(gauges.samples)} samples over the load)")


def _result(spec: RunSpec, engine: ServedEngine, server: Served, run: ServedRun,
            meter: EnergyMeter, hardware: dict[str, Any], health: dict[str, Any] | None,
            warnings: list[str], started: str) -> ExperimentResult:
    cfg = spec.config
    load = cfg.load
    assert load is not None
    records, t0, t1, marks = run.records, run.t0, run.t1, run.marks
    idle, loaded = run.idle, run.loaded
    target, source = target_occupancy(load, server, len(records))
    w = steady_window(records, target, source, t0, t1, load.min_window_s,
                      load.min_fill_fraction)
    whole, _ = summary.span(meter, marks, 0, len(marks) - 1, records, t0, idle, loaded)
    steady, reading, att = summary.steady_state(w, meter, marks, records, t0, idle, loaded)
    flags = list(steady.flags)
    serving = ServingMetrics(
        url=run.url, launched=server.command is not None, server_log=run.log,
        engine=engine.name if engine.launched else None, engine_reused=run.reused,
        engine_version=run.engine_version, command=run.command,
        startup_s=run.startup_s, pattern=load.pattern, num_requests=len(records),
        load_s=t1 - t0, idle_baseline_w=idle.watts if idle else None,
        idle_baseline_note=run.idle_note,
        loaded_baseline_w=loaded.watts if loaded else None,
        loaded_baseline_note=run.loaded_note, whole_load=whole, steady_state=steady,
        fixed_output_requested=load.fixed_output and server.fixed_length != "none",
        requests=summary.served(records, t0, att, _edges(steady, t0)))
    token_checks(serving, records, cfg.max_output_tokens, flags)
    _lateness_check(records, flags)
    _gauge_summary(serving, run.gauges, w)
    serving.flags = flags
    if reading is not None:
        energy = energy_result(reading, idle, steady.energy.tokens,
                               sum(1 for r in records if r.done is not None and w.end
                                   and w.start is not None and w.start < r.done <= w.end))
        energy.baseline_cache_age_s = run.idle_age
    else:
        energy = EnergyResult(source=meter.source, note=steady.energy.note or "no window")
    timings = {"startup": run.startup_s or 0.0, "load": t1 - t0}
    libs = {"httpx": version("httpx")}
    if run.engine_version and engine.library:
        libs[engine.library] = run.engine_version
    prov = provenance(cfg.device, {**hardware, "server": {"url": run.url}},
                      libs, started, timings, spec.isolation)
    prov.model_already_loaded = run.reused
    return experiment_result(spec, summary.load_metrics(records, t1 - t0, load.warmup_requests),
                             energy, prov, health, warnings + energy.flags + flags, serving)


def _edges(steady: Any, t0: float) -> tuple[float, float] | None:
    e = steady.energy
    return None if e.start_s is None or e.end_s is None else (e.start_s + t0, e.end_s + t0)


LATE_S = 0.05  # a request sent later than this after its scheduled time is flagged


def _lateness_check(records: list[RequestRecord], flags: list[str]) -> None:
    late = [(r.submitted - r.scheduled, r.index) for r in records
            if r.scheduled is not None and r.submitted - r.scheduled > LATE_S]
    if late:
        worst = max(late)
        flags.append(f"the client fell behind the arrival schedule: {len(late)} requests sent "
                     f"more than {LATE_S:g} s late (worst: request {worst[1]}, "
                     f"{worst[0]:.3f} s)")


def token_checks(serving: ServingMetrics, records: list[RequestRecord], max_tokens: int,
                  flags: list[str]) -> None:
    """Usage counts against the tokens received, and whether a fixed length was honoured."""
    missing = [r for r in records if r.usage_completion_tokens is None]
    serving.usage_missing = len(missing)
    if missing:
        flags.append(f"{len(missing)} requests had no usage counts: tokens are the tokens "
                     "received (one per content event without token ids)")
    mismatched = [r for r in records if r.usage_completion_tokens is not None
                  and r.usage_completion_tokens != len(r.token_times)]
    serving.token_mismatches = len(mismatched)
    if mismatched:
        r = mismatched[0]
        flags.append(f"{len(mismatched)} requests' usage token counts differ from the tokens "
                     f"received (e.g. request {r.index}: usage "
                     f"{r.usage_completion_tokens}, received {len(r.token_times)})")
    if serving.fixed_output_requested and not missing:
        serving.fixed_output_honoured = all(r.usage_completion_tokens == max_tokens
                                            for r in records)
        if not serving.fixed_output_honoured:
            flags.append(f"fixed output length {max_tokens} asked for but not honoured by "
                         "the engine (usage counts differ)")
