"""The engine registry: every engine declared in one module and looked up (config, rules,
trust, runner); one strict base for every settings section; the engines that need a GPU
(TensorRT-LLM, SGLang) launched by llem against a fake OpenAI-compatible server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from serving_checks import LinearPowerMeter

from llem_core.analysis.results import RunSpec
from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import conflicts
from llem_core.campaign.loading import CampaignFileError, validate_campaign_data
from llem_core.runtime import engines as registry
from llem_core.runtime.engines import LaunchedEngine, engine_for, engines
from llem_core.runtime.engines.settings import LaunchedSettings, LoadSettings, ServerSettings
from llem_core.runtime.serving.experiment import run_server

FAKE = Path(__file__).with_name("fake_openai_server.py")
INFRA = {"__init__", "base", "settings", "urls", "rules"}


def test_every_engine_module_is_registered_once() -> None:
    folder = Path(registry.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")} - INFRA
    assert modules == set(registry.ENGINE_MODULES)
    assert list(engines()) == ["pytorch", "server", "vllm", "llamacpp", "trtllm", "sglang"]


def test_the_config_model_is_built_from_the_registry() -> None:
    schema = ExperimentConfig.model_json_schema()
    assert schema["properties"]["backend"]["enum"] == list(engines())
    for engine in engines().values():
        ExperimentConfig(model="/m", backend=engine.name)  # every engine is a backend value
        if engine.section is not None:
            assert engine.section in ExperimentConfig.model_fields
            assert engine.settings is not None
    with pytest.raises(ValidationError, match="not an engine llem knows"):
        ExperimentConfig(model="/m", backend="tgi")


def test_a_section_applies_only_to_its_engine() -> None:
    cfg = ExperimentConfig(model="/m", backend="vllm", device="cpu", dtype="float32",
                           load={"pattern": "burst"}, llamacpp={"n_threads": 2})
    assert "llamacpp is set but backend is vllm (it applies to backend llamacpp)" \
        in conflicts(cfg)
    pytorch = ExperimentConfig(model="/m", load={"pattern": "burst"})
    assert ("load is set but backend is pytorch (it applies to backend server or vllm or "
            "llamacpp or trtllm or sglang)") in conflicts(pytorch)


# --- the one strict base (bugs: serving sections had their own, laxer one) --------------

@pytest.mark.parametrize("section, data", [
    ("load", {"pattern": "concurrency", "concurrency": True}),
    ("load", {"seed": True}),
    ("load", {"num_requests": False}),
    ("server", {"url": "http://127.0.0.1:1", "max_num_seqs": True}),
    ("server", {"url": "http://127.0.0.1:1", "port": True}),
    ("vllm", {"max_num_seqs": True}),
    ("llamacpp", {"n_threads": True}),
])
def test_booleans_are_not_numbers_in_engine_sections(section: str, data: dict) -> None:
    with pytest.raises(ValidationError, match="expected a number, got a boolean"):
        ExperimentConfig(model="/m", **{section: data})


def test_a_campaign_file_refuses_a_boolean_concurrency(tmp_path: Path) -> None:
    data = {"campaign": "c", "base": {"model": "/m", "backend": "server",
                                      "server": {"url": "http://127.0.0.1:1"},
                                      "load": {"concurrency": True}}}
    with pytest.raises(CampaignFileError) as err:
        validate_campaign_data(data, "c.yaml")
    assert any("base.load.concurrency" in line and "boolean" in line
               for line in err.value.lines())


def test_load_seed_and_batch_capacity_are_bounded() -> None:
    assert LoadSettings(seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ValidationError, match="less than or equal to 4294967295"):
        LoadSettings(seed=2**32)
    assert ServerSettings(url="http://x", max_num_seqs=65_536).max_num_seqs == 65_536
    with pytest.raises(ValidationError, match="less than or equal to 65536"):
        ServerSettings(url="http://x", max_num_seqs=65_537)
    with pytest.raises(ValidationError, match="finite"):
        ServerSettings(url="http://x", startup_timeout_s=float("nan"))


def test_launched_engines_share_one_declaration_with_their_own_defaults() -> None:
    shared = set(LaunchedSettings.model_fields)
    assert len(shared) == 9
    for engine in engines().values():
        if engine.served and engine.settings is not None:
            assert issubclass(engine.settings, LaunchedSettings)
            for name in shared:  # the shared bounds hold in every engine
                bounds = {type(m) for m in LaunchedSettings.model_fields[name].metadata}
                assert bounds <= {type(m) for m in engine.settings.model_fields[name].metadata}
    defaults = {n: (e.settings().startup_timeout_s, e.settings().token_ids,
                    e.settings().max_num_seqs)
                for n, e in engines().items() if e.served and e.name != "server"}
    assert defaults["vllm"] == (1800.0, True, 256) and defaults["llamacpp"] == (600.0, False, 1)
    assert ServerSettings().max_num_seqs is None and ServerSettings().token_ids is False


def test_every_launched_engine_names_its_version_in_provenance() -> None:
    for engine in engines().values():
        if engine.served and engine.launched:
            assert engine.library, engine.name
            assert engine.version_path or engine.distribution, engine.name


def test_every_shared_setting_reaches_the_launched_server() -> None:
    values = {"startup_timeout_s": 77.0, "stop_timeout_s": 7.0, "endpoint": "chat",
              "token_ids": False, "max_num_seqs": 3, "loaded_baseline_s": 1.5,
              "metrics_interval_s": 0.5, "request_timeout_s": 99.0}
    for name in ("vllm", "sglang", "trtllm"):
        cfg = ExperimentConfig(model="/m", backend=name, device="cuda", dtype="float16",
                               load={"pattern": "burst"}, **{name: {**values, "env": {
                                   "OMP_NUM_THREADS": "2"}}})
        served = engine_for(name).server(cfg)
        assert {k: getattr(served, k) for k in values} == values
        assert served.env["OMP_NUM_THREADS"] == "2" and served.model_name == "/m"


def test_gpu_selection_is_refused_in_every_engine_environment() -> None:
    for engine in engines().values():
        if engine.env_field is None:
            continue
        section = {"env": {"CUDA_VISIBLE_DEVICES": "3"}}
        if engine.name == "server":
            section["url"] = "http://127.0.0.1:1"
        with pytest.raises(ValidationError, match="selects GPUs"):
            ExperimentConfig(model="/m", backend=engine.name, **{engine.section: section})


# --- engines that need a GPU: argv and settings ----------------------------------------

def gpu_cfg(backend: str, **section: object) -> ExperimentConfig:
    return ExperimentConfig(model="/models/m", backend=backend, device="cuda", gpus=[0, 1],
                            dtype="bfloat16", seed=5, load={"pattern": "burst"},
                            **{backend: {"tensor_parallel_size": 2, **section}})


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_trtllm_argv() -> None:
    argv = engine_for("trtllm").server(gpu_cfg(
        "trtllm", max_num_seqs=32, max_seq_len=4096,
        kv_cache_free_gpu_memory_fraction=0.8)).command
    assert argv[:2] == ["trtllm-serve", "/models/m"]
    assert flag(argv, "--host") == "127.0.0.1" and flag(argv, "--port") == "{port}"
    assert flag(argv, "--backend") == "pytorch" and flag(argv, "--max_batch_size") == "32"
    assert flag(argv, "--tp_size") == "2" and flag(argv, "--max_seq_len") == "4096"
    assert flag(argv, "--kv_cache_free_gpu_memory_fraction") == "0.8"
    assert "--max_num_tokens" not in argv


def test_sglang_argv() -> None:
    cfg = gpu_cfg("sglang", python="/envs/sgl/bin/python", max_num_seqs=16,
                  context_length=2048)
    served = engine_for("sglang").server(cfg)
    argv = served.command
    assert argv[:3] == ["/envs/sgl/bin/python", "-m", "sglang.launch_server"]
    assert flag(argv, "--model-path") == "/models/m" and flag(argv, "--tp-size") == "2"
    assert flag(argv, "--max-running-requests") == "16" and flag(argv, "--dtype") == "bfloat16"
    assert flag(argv, "--random-seed") == "5" and flag(argv, "--context-length") == "2048"
    assert "--enable-metrics" in argv and served.metrics_path == "/metrics"


@pytest.mark.parametrize("backend", ["trtllm", "sglang"])
def test_gpu_engines_refuse_a_cpu_and_unmetered_gpus(backend: str) -> None:
    cpu = ExperimentConfig(model="/m", backend=backend, device="cpu", dtype="float16",
                           load={"pattern": "burst"})
    assert f"backend {backend} runs only on GPUs, but device is cpu" in conflicts(cpu)
    one = ExperimentConfig(model="/m", backend=backend, device="cuda", gpus=[0, 1],
                           dtype="float16", load={"pattern": "burst"})
    assert any(f"{backend}.tensor_parallel_size 1 differs from the 2 gpus" in c
               for c in conflicts(one))
    assert "backend trtllm cannot run dtype float32" in conflicts(
        ExperimentConfig(model="/m", backend="trtllm", device="cuda", dtype="float32",
                         load={"pattern": "burst"}))


def local_campaign(base: dict) -> dict:
    return {"campaign": "c", "runner": {"type": "local"}, "base": {
        "model": "/m", "device": "cuda", "dtype": "float16", "load": {"pattern": "burst"},
        **base}}


def test_programs_the_gpu_engines_start_fall_under_the_allow_lists(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLEM_ALLOWED_SERVER_COMMANDS", raising=False)
    monkeypatch.delenv("LLEM_ALLOWED_PYTHONS", raising=False)
    # trtllm-serve, named or not: the local runner would launch it on the worker
    for base, field in [({"backend": "trtllm"}, "base.backend"),
                        ({"backend": "trtllm", "trtllm": {"program": "/opt/t/trtllm-serve"}},
                         "base.trtllm.program"),
                        ({"backend": "sglang", "sglang": {"python": "/opt/s/bin/python"}},
                         "base.sglang.python"),
                        ({"backend": "llamacpp", "llamacpp": {"python": "/opt/l/bin/python"}},
                         "base.llamacpp.python")]:
        with pytest.raises(CampaignFileError) as err:
            validate_campaign_data(local_campaign(base), "c.yaml")
        assert any(line.startswith(f"c.yaml: {field}:") for line in err.value.lines()), \
            err.value.lines()
    monkeypatch.setenv("LLEM_ALLOWED_SERVER_COMMANDS", "trtllm-serve")
    validate_campaign_data(local_campaign({"backend": "trtllm"}), "c.yaml")


# --- engines that need a GPU: launched against a fake engine ----------------------------

def fake_program(tmp_path: Path) -> Path:
    """An executable that runs the fake server with whatever argv the engine gets."""
    exe = tmp_path / "fake-engine"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
    exe.chmod(0o755)
    return exe


@pytest.mark.parametrize("backend", ["trtllm", "sglang"])
def test_a_gpu_engine_launched_against_a_fake_server(backend: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    argv_file = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_ARGV_FILE", str(argv_file))
    model = tmp_path / "model"
    model.mkdir()
    program = {"program": str(fake_program(tmp_path))} if backend == "trtllm" \
        else {"python": str(fake_program(tmp_path))}
    cfg = ExperimentConfig(
        model=str(model), backend=backend, device="cuda", gpus=[0], dtype="float16",
        max_output_tokens=20, prompts={"count": 8, "length": 8},
        energy={"meter": "none", "baseline_s": 0.2},
        load={"pattern": "burst", "min_window_s": 0.0, "energy_interval_s": 0.005,
              "warmup_requests": 1},
        **{backend: {**program, "max_num_seqs": 2, "loaded_baseline_s": 0.2,
                     "metrics_interval_s": 0.02, "startup_timeout_s": 30,
                     "env": {"OMP_NUM_THREADS": "1"}}})
    meter = LinearPowerMeter()
    r = run_server(RunSpec(config=cfg, isolation="process"), tmp_path / "c1.json", meter=meter)
    s = r.serving
    launched = json.loads(argv_file.read_text())
    assert [str(program.popitem()[1]), *launched] == s.command  # exactly what llem built
    assert s.engine == backend and s.engine_version == "0.0-fake"
    assert r.provenance.libraries[engine_for(backend).library] == "0.0-fake"
    assert r.provenance.isolation == "process"
    assert s.fixed_output_honoured is True and s.num_requests == 8
    assert all(q.completion_tokens == 20 == q.tokens_received for q in s.requests)
    assert s.steady_state.target_occupancy == 2 and r.energy.raw_j is not None
    if backend == "sglang":  # Prometheus gauges sampled inside the window
        assert s.engine_gauges is not None and s.engine_gauges["running_max"] >= 1
    else:  # trtllm-serve's /metrics is JSON: not sampled, said so
        assert s.engine_gauges is None and s.engine_gauges_note == "server.metrics_path null"
    assert isinstance(engine_for(backend), LaunchedEngine)
    with pytest.raises(httpx.ConnectError):  # stopped after the experiment
        httpx.get(s.url + "/health", timeout=2)
