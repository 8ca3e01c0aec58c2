"""backend: server end to end on the CPU, against a real `transformers serve` of the tiny
model (continuous batching on). The meter is simulated with a known power trace, so the
energy arithmetic is checked exactly; everything else (server, streaming, timing) is real."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from serving_checks import LinearPowerMeter, check_load

from llem_core.analysis.results import ExperimentResult, RunSpec, row_of
from llem_core.campaign.config import ExperimentConfig
from llem_core.runtime.experiment.errors import ExperimentError
from llem_core.runtime.measure import run
from llem_core.runtime.serving.experiment import run_server
from llem_core.runtime.serving.process import ServerProcess, free_port

pytestmark = pytest.mark.slow
try:
    import openai  # noqa: F401  (transformers serve imports it)
except ImportError:
    if os.environ.get("CI") == "true":
        raise  # CI installs the serving extra: these tests must run there, not skip
    pytest.skip("transformers serve needs openai (the serving extra)", allow_module_level=True)

SERVE = [sys.executable, "-m", "transformers.cli.transformers", "serve", "{model}",
         "--port", "{port}", "--host", "127.0.0.1", "--device", "cpu", "--dtype", "float32",
         "--continuous-batching"]
OUT = 12


def config(model: Path, server: dict, load: dict, **over: object) -> ExperimentConfig:
    return ExperimentConfig(
        model=str(model), backend="server", device="cpu", max_output_tokens=OUT,
        prompts={"count": 8, "length": 12}, energy={"meter": "none", "baseline_s": 0.3},
        server={"fixed_length": "generation_config", "loaded_baseline_s": 0.3,
                "startup_timeout_s": 300, **server},
        load={"min_window_s": 0.2, "energy_interval_s": 0.02, "warmup_requests": 2, **load},
        **over)


@pytest.fixture(scope="module")
def served(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One server for the tests that reach a running server through server.url."""
    port = free_port()
    argv = [a.replace("{model}", str(tiny_model)).replace("{port}", str(port)) for a in SERVE]
    log = tmp_path_factory.mktemp("served") / "server.log"
    with ServerProcess(argv, log) as proc:
        proc.wait_healthy(f"http://127.0.0.1:{port}/health", 300)
        yield f"http://127.0.0.1:{port}"


def test_burst_launched_by_llem(tiny_model: Path, tmp_path: Path) -> None:
    # A burst of 8 on an engine batching them all decodes them side by side: the window
    # (4th first token to 4th completion) lasts a few decode steps, so mark every 5 ms.
    cfg = config(tiny_model, {"command": SERVE, "max_num_seqs": 4},
                 {"pattern": "burst", "energy_interval_s": 0.005})
    out = tmp_path / "cycle_1.json"
    meter = LinearPowerMeter()
    r = run_server(RunSpec(config=cfg), out, meter=meter)
    check_load(r, meter, OUT)
    s = r.serving
    assert s.launched and s.startup_s is not None and Path(s.server_log).exists()
    assert Path(s.server_log) == tmp_path / "cycle_1.server.log"
    assert "/v1/completions" in Path(s.server_log).read_text()
    assert s.steady_state.target_occupancy == 4
    assert s.idle_baseline_w is not None and s.loaded_baseline_w is not None
    e = s.steady_state.energy
    assert e.adjusted_idle_j == pytest.approx(e.raw_j - s.idle_baseline_w * e.seconds)
    assert e.adjusted_loaded_j == pytest.approx(e.raw_j - s.loaded_baseline_w * e.seconds)
    assert all(r.submitted_s < 0.05 for r in s.requests)  # a burst: all at t = 0
    assert load_result(out).serving == s
    with pytest.raises(httpx.ConnectError):  # the server was stopped
        httpx.get(s.url + "/health", timeout=2)


def test_rate_against_a_running_server(tiny_model: Path, served: str) -> None:
    load = {"pattern": "rate", "rate": 8.0, "arrival": "gamma", "burstiness": 0.5, "seed": 1}
    cfg = config(tiny_model, {"url": served}, load)
    meter = LinearPowerMeter()
    r = run_server(RunSpec(config=cfg), meter=meter)
    check_load(r, meter, OUT)
    s = r.serving
    assert not s.launched and s.idle_baseline_w is None and "server.url" in s.idle_baseline_note
    assert s.steady_state.target_source == "estimated"
    from llem_core.runtime.serving.load import arrival_offsets
    offsets = arrival_offsets(cfg.load, 8)
    assert [q.scheduled_s for q in s.requests] == pytest.approx(offsets, abs=1e-9)
    late = [q.submitted_s - q.scheduled_s for q in s.requests]
    assert all(d >= 0 for d in late)
    assert (max(late) > 0.05) == any("fell behind" in f for f in s.flags)


def test_runner_dispatch_without_a_meter_writes_null_energy(tiny_model: Path, served: str,
                                                            tmp_path: Path) -> None:
    cfg = config(tiny_model, {"url": served, "max_num_seqs": 2},
                 {"pattern": "concurrency", "concurrency": 2})
    r = run(RunSpec(config=cfg), tmp_path / "cycle_1.json")
    assert r.serving is not None and r.serving.num_requests == 8
    assert r.energy.raw_j is None and r.serving.steady_state.energy.raw_j is None
    assert all(q.window_energy_j is None for q in r.serving.requests)
    assert r.serving.loaded_baseline_note == "no energy meter"
    assert load_result(tmp_path / "cycle_1.json").config.load.concurrency == 2
    row = row_of(r)
    assert row["serving_pattern"] == "concurrency" and row["config.load.concurrency"] == 2
    assert row["j_per_token_adjusted_loaded"] is None and row["energy_raw_j"] is None


def test_never_healthy_fails_in_time_and_leaves_no_process(tiny_model: Path) -> None:
    port = free_port()
    cfg = config(tiny_model, {"command": SERVE, "port": port, "startup_timeout_s": 1.0,
                              "stop_timeout_s": 5.0}, {"pattern": "burst"})
    t0 = time.monotonic()
    with pytest.raises(ExperimentError) as err:
        run_server(RunSpec(config=cfg), meter=LinearPowerMeter())
    assert time.monotonic() - t0 < 1.0 + 5.0 + 5.0  # timeout + stop grace + slack
    assert "\n" not in str(err.value) and "not healthy" in str(err.value)
    marker = f"--port\0{port}\0".encode()
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if marker in _read(p)], "a server process outlived the experiment"


def load_result(path: Path) -> ExperimentResult:
    return ExperimentResult.model_validate_json(path.read_text())


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


def test_a_rejected_request_fails_the_experiment_in_one_line(tiny_model: Path,
                                                             served: str) -> None:
    # transformers serve refuses vLLM's ignore_eos/min_tokens fields (HTTP 422)
    cfg = config(tiny_model, {"url": served, "fixed_length": "ignore_eos"}, {"pattern": "burst"})
    with pytest.raises(ExperimentError) as err:
        run_server(RunSpec(config=cfg), meter=LinearPowerMeter())
    msg = str(err.value)
    assert "\n" not in msg and "warm-up requests failed" in msg and "HTTP 422" in msg


def test_warm_never_keeps_an_engine_whose_caches_are_unknown(tiny_model: Path,
                                                             tmp_path: Path) -> None:
    # backend server: its prefix/KV caches would carry the previous experiment's prompts
    from llem_core.runtime.supervisor.warm import WarmCache

    warm = WarmCache()
    cfg = config(tiny_model, {"command": SERVE, "max_num_seqs": 4}, {"pattern": "burst"})
    first = run(RunSpec(config=cfg, cycle=1), tmp_path / "cycle_1.json", warm=warm)
    assert warm.engines().engine is None
    with pytest.raises(httpx.ConnectError):  # stopped after its experiment, as always
        httpx.get(first.serving.url + "/health", timeout=2)
    second = run(RunSpec(config=cfg, cycle=2), tmp_path / "cycle_2.json", warm=warm)
    assert not second.serving.engine_reused and second.serving.startup_s is not None
    assert not second.provenance.model_already_loaded
