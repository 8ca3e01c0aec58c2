"""backend: vllm without an engine: the argv and environment llem builds, the typed section's
rules, grid axes, identity, and the trust policy for programs a campaign launches."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import config_hash, conflicts, expand
from llem_core.campaign.loading import CampaignFileError, validate_campaign_data
from llem_core.runtime.engines.base import visible_devices
from llem_core.runtime.engines.settings import ServerSettings
from llem_core.runtime.engines.vllm import VLLM_MODULE, as_server, vllm_argv, vllm_env


def vcfg(**over: object) -> ExperimentConfig:
    base: dict = {"model": "/models/m", "backend": "vllm", "device": "cpu", "dtype": "float32",
                  "load": {"pattern": "burst"}}
    return ExperimentConfig(**{**base, **over})


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_argv_carries_every_engine_setting_and_no_shell() -> None:
    cfg = vcfg(seed=7, vllm={"python": "/envs/vllm/bin/python", "max_num_seqs": 64,
                             "max_model_len": 2048, "gpu_memory_utilization": 0.85,
                             "enforce_eager": True, "kv_cache_dtype": "fp8",
                             "quantization": "awq", "extra_args": ["--block-size", "32"]})
    argv = vllm_argv(cfg)
    assert argv[:3] == ["/envs/vllm/bin/python", "-m", VLLM_MODULE]
    assert flag(argv, "--model") == "/models/m" and flag(argv, "--port") == "{port}"
    assert flag(argv, "--host") == "127.0.0.1"
    assert flag(argv, "--max-num-seqs") == "64" and flag(argv, "--max-model-len") == "2048"
    assert flag(argv, "--dtype") == "float32" and flag(argv, "--seed") == "7"
    assert flag(argv, "--gpu-memory-utilization") == "0.85"
    assert flag(argv, "--kv-cache-dtype") == "fp8" and flag(argv, "--quantization") == "awq"
    assert "--enforce-eager" in argv and argv[-2:] == ["--block-size", "32"]
    default = vllm_argv(vcfg())
    assert "--enforce-eager" not in default and "--quantization" not in default
    assert "--max-model-len" not in default and flag(default, "--max-num-seqs") == "256"


def test_token_ids_are_asked_for_unless_switched_off() -> None:
    assert as_server(vcfg()).token_ids is True
    assert as_server(vcfg(vllm={"token_ids": False})).token_ids is False


def test_launched_server_is_fixed_length_with_the_engine_batch_limit() -> None:
    server = as_server(vcfg(vllm={"max_num_seqs": 8, "loaded_baseline_s": 3}), "/tmp/c")
    assert server.fixed_length == "ignore_eos" and server.max_num_seqs == 8
    assert server.loaded_baseline_s == 3 and server.metrics_path == "/metrics"
    assert server.env["VLLM_CACHE_ROOT"] == "/tmp/c" and server.env["HF_HUB_OFFLINE"] == "1"
    assert server.model_name == "/models/m" and server.command is not None


def test_environment_cpu_gpu_and_user_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert vllm_env(vcfg(), None)["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    gpu = vcfg(device="cuda", gpus=[1, 2], vllm={"tensor_parallel_size": 2,
                                                  "env": {"VLLM_X": "1"}})
    env = vllm_env(gpu, None)
    assert env["CUDA_VISIBLE_DEVICES"] == "5,7" and env["VLLM_X"] == "1"
    assert "VLLM_CACHE_ROOT" not in env
    assert "HF_HUB_OFFLINE" not in vllm_env(vcfg(model="org/model"), None)
    ordinary = vcfg(vllm={"env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": "/c"}})
    assert vllm_env(ordinary, None)["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_visible_devices_maps_in_process_indices() -> None:
    assert visible_devices([0, 2], None) == "0,2"
    assert visible_devices([1], "4, 6") == "6"


@pytest.mark.parametrize("args", [["--port", "1"], ["--port=1"], ["--max-num-seqs", "9"],
                                  ["--model=x"], ["-tp", "2"], ["--dtype", "half"]])
def test_extra_args_cannot_contradict_recorded_fields(args: list[str]) -> None:
    with pytest.raises(ValidationError, match="set by llem"):
        vcfg(vllm={"extra_args": args})


@pytest.mark.parametrize(("args", "named"), [
    (["--max_num_seqs", "512"], "--max_num_seqs"),            # vLLM reads '_' as '-'
    (["--max-num-seq=9"], "--max-num-seq"),                   # argparse takes a prefix
    (["--max-num", "9"], "--max-num"),
    (["--gpu_mem", "0.1"], "--gpu_mem"),
    (["--served-model-name.x", "m"], "--served-model-name"),  # vLLM's JSON-field syntax
    (["-qfp8"], "-qfp8"), (["-tp2"], "-tp2"), (["-tp=2"], "-tp"), (["-t", "2"], "-t"),
    (["--no-enforce-eager"], "--no-enforce-eager"),           # BooleanOptionalAction
    (["--block-size", "32", "--port", "1"], "--port"),
])
def test_extra_args_in_other_spellings_are_refused(args: list[str], named: str) -> None:
    with pytest.raises(ValidationError, match="set by llem") as err:
        vcfg(vllm={"extra_args": args})
    [e] = err.value.errors()
    assert named in e["msg"] and "\n" not in e["msg"]


@pytest.mark.parametrize("args", [["--config", "x.yaml"], ["--config=x.yaml"], ["--conf", "x"]])
def test_extra_args_cannot_load_arguments_from_a_file(args: list[str]) -> None:
    with pytest.raises(ValidationError, match=r"--config.*loads engine arguments from a file"):
        vcfg(vllm={"extra_args": args})


def _campaign_errors(base: dict) -> list[str]:
    """The trust policy's verdict on a campaign whose base is ``base`` (vLLM on a CPU)."""
    data = {"campaign": "x", "base": {"model": "/models/m", "backend": "vllm", "device": "cpu",
                                      "dtype": "float32", "load": {"pattern": "burst"},
                                      **base}, "runner": {"type": "docker"}}
    try:
        validate_campaign_data(data, "c.yaml")
    except CampaignFileError as exc:
        return exc.lines()
    return []


# Old behaviour: a deny-list at the model refused these (and missed --compilation-config
# and -cc.backend=...). Now only an allow-list passes the campaign's trust check.
@pytest.mark.parametrize("flag", [
    "--tool-parser-plugin", "--middleware", "--worker-cls", "--worker-extension-cls",
    "--trust-remote-code", "--logits-processors", "--reasoning-parser-plugin",
    "--tool_parser_plugin", "--worker_extension_cls", "--trust-remote", "--middle",
    "--logits_processors=m.P", "--scheduler-cls", "--distributed-executor-backend",
    "--kv-transfer-config", "--logging-config.x", "--log-config-file",
    "--compilation-config", "-cc", "-cc.backend=pkg.mod", "--compilation-config.backend",
    "--speculative-config", "--hf-overrides", "--model-loader-extra-config", "--block-size.x",
    "--enable-prefix", "--generation-config", "--load-format", "--attention-backend"])
def test_extra_args_cannot_make_the_engine_run_code(flag: str) -> None:
    [line] = _campaign_errors({"vllm": {"extra_args": [flag, "/tmp/evil.py"]}})
    assert line.startswith("c.yaml: base.vllm.extra_args: ") and flag in line
    assert any(w in line for w in ("not among the engine flags", "JSON-valued", "takes "))


@pytest.mark.parametrize("args", [
    ["--block-size", "32", "--no-enable-prefix-caching", "--enable_chunked_prefill", "-pp",
     "1", "-O3", "--max-num-batched-tokens=8k", "--swap-space", "1.5", "--load-format",
     "safetensors", "--cudagraph-capture-sizes", "1", "2", "4", "--max-logprobs", "-1",
     "--generation-config", "vllm", "--disable-log-stats", "-dp=1", "-O", "2"],
    ["--attention-backend", "FLASH_ATTN", "--scheduling-policy", "priority"],
    ["--max-num-batched-tokens", "8192", "--enable-chunked-prefill", "--enable-prefix-caching",
     "--max-seq-len-to-capture", "8192", "-pp", "2", "-dp", "2", "--disable-log-requests",
     "--cudagraph-capture-sizes=8", "--block-size", "16"]])
def test_allow_listed_engine_args_pass_the_trust_check(args: list[str]) -> None:
    assert _campaign_errors({"vllm": {"extra_args": args}}) == []


@pytest.mark.parametrize(("args", "reason"), [
    (["--block-size", "--no-enable-prefix-caching"], "takes a whole number"),  # a flag
    (["--block-size"], "needs a value"),
    (["--block-size", "-1.5"], "takes a whole number"),       # vLLM reads '-1.5' as a flag
    (["--enable-prefix-caching", "org/other-model"], "follows no flag"),  # the positional
    (["--enable-prefix-caching=false"], "takes no value"),
    (["--no-disable-log-stats"], "not among"),                # store_true: no --no- form
    (["-O4"], "not among"), (["-Ox.y"], "JSON-valued"), (["-O"], "optimization level"),
    (["--generation-config", "/tmp/gen"], "takes auto or vllm"),
    (["--attention-backend", "pkg.mod.Backend"], "takes a backend's name"),
    (["--load-format", "tensorizer"], "takes auto or"), (["-pp2"], "not among"),
    (["--", "x"], "not among"), (["-5"], "follows no flag"),
    # nargs='+' given with '=' takes that one value: argparse reads the '2' as the model
    (["--cudagraph-capture-sizes=1", "2"], "2 (item 1) is a value that follows no flag")])
def test_engine_args_are_read_as_vllm_reads_them(args: list[str], reason: str) -> None:
    [line] = _campaign_errors({"vllm": {"extra_args": args}})
    assert reason in line, line


def test_the_deployment_allows_more_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--compilation-config", '{"level": 3}', "-cc.mode=3", "--block-size", "16"]
    assert _campaign_errors({"vllm": {"extra_args": args}})
    monkeypatch.setenv("LLEM_ALLOWED_VLLM_FLAGS", "--compilation_config, -cc")
    assert _campaign_errors({"vllm": {"extra_args": args}}) == []
    # '--' (end of options), '-', a glob or a value: not a flag, refused as misconfigured
    for bad in ("--port", "--conf", "compilation-config", " , ", "--", "-", "--*",
                "--compilation-config=x"):
        monkeypatch.setenv("LLEM_ALLOWED_VLLM_FLAGS", bad)
        [line] = _campaign_errors({"vllm": {"extra_args": ["--block-size", "16"]}})
        assert "LLEM_ALLOWED_VLLM_FLAGS" in line and "allows nothing" in line


def test_ordinary_extra_args_still_pass() -> None:
    args = ["--block-size", "32", "--no-enable-prefix-caching", "--reasoning-parser", "qwen3",
            "--config-format", "hf", "--logits-processor-pattern", "x", "-O3", "-pp", "1",
            "--enable_chunked_prefill", "--swap-space=-1", "-1.5", "--limit-mm-per-prompt.x",
            "1", "--no-trust-remote-code"]
    assert vcfg(vllm={"extra_args": args}).vllm.extra_args == args


@pytest.mark.parametrize("name", [
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
    "PYTHONUSERBASE", "PYTHONINSPECT", "PYTHONEXECUTABLE", "PYTHONSAFEPATH", "PYTHONWARNINGS",
    "PATH", "BASH_ENV", "DYLD_INSERT_LIBRARIES", "VLLM_LOGGING_CONFIG_PATH",
    # OpenMP's tools, inductor's caches (remote ones too), the folders default caches are in
    "OMP_TOOL_LIBRARIES", "TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE", "TORCHINDUCTOR_CACHE_DIR",
    "PYTORCH_KERNEL_CACHE_PATH", "HOME", "XDG_CACHE_HOME", "TMPDIR"])
def test_environment_cannot_make_a_program_run_other_code(name: str) -> None:
    with pytest.raises(ValidationError, match=f"{name} is refused.*code execution"):
        vcfg(vllm={"env": {name: "/tmp/evil"}})
    with pytest.raises(ValidationError, match=f"{name} is refused.*code execution"):
        ServerSettings(command=["/opt/srv/bin/serve"], env={name: "/tmp/evil"})


@pytest.mark.parametrize("name", ["CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "VLLM_HOST_IP",
                                  "VLLM_PORT", "CUDA_DEVICE_ORDER"])
def test_engine_environment_llem_sets_cannot_be_overridden(name: str) -> None:
    with pytest.raises(ValidationError, match=f"{name} is set by llem"):
        vcfg(vllm={"env": {name: "0"}})


def test_server_environment_names_are_checked() -> None:
    ok = ServerSettings(command=["/opt/srv/bin/serve"], env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert ok.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    for env in ({"A B": "1"}, {"": "1"}, {"N" * 129: "1"}):
        with pytest.raises(ValidationError, match="not a usable environment variable"):
            ServerSettings(command=["/opt/srv/bin/serve"], env=env)
    with pytest.raises(ValidationError, match="U\\+0000"):
        ServerSettings(command=["/opt/srv/bin/serve"], env={"X": "a\x00b"})
    # what llem builds for a vLLM experiment still passes the launched server's checks
    assert as_server(vcfg(vllm={"env": {"VLLM_CPU_KVCACHE_SPACE": "1"}}), "/tmp/c").env


@pytest.mark.parametrize("program", ["{model}", "{model}/../bin/sh", "/opt/{port}/x"])
def test_server_program_cannot_be_a_placeholder(program: str) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        ServerSettings(command=[program, "--port", "{port}"])
    with pytest.raises(ValidationError, match="placeholder"):
        vcfg(vllm={"python": program})
    assert ServerSettings(command=["/opt/srv/bin/serve", "{model}", "{port}"]).command


def test_dtype_is_one_setting() -> None:
    only_engine = ExperimentConfig(model="/m", backend="vllm", load={"pattern": "burst"},
                                   vllm={"dtype": "float16"})
    assert only_engine.dtype == "float16"
    assert vcfg(vllm={"dtype": "float32"}).dtype == "float32"
    with pytest.raises(ValidationError, match=r"vllm\.dtype .float16. differs from dtype"):
        vcfg(vllm={"dtype": "float16"})


def test_rules_relate_the_sections() -> None:
    assert conflicts(vcfg()) == []
    assert any("needs a load section" in c for c in conflicts(vcfg(load=None)))
    with_server = vcfg(server={"url": "http://127.0.0.1:1"})
    assert any("server is set but backend is vllm" in c for c in conflicts(with_server))
    on_pytorch = ExperimentConfig(model="/m", vllm={"max_num_seqs": 4})
    assert any("vllm is set but backend is pytorch" in c for c in conflicts(on_pytorch))
    tp = vcfg(device="cuda", gpus=[0], vllm={"tensor_parallel_size": 2})
    assert any("tensor_parallel_size 2 differs" in c for c in conflicts(tp))
    # no vllm section: its defaults (tensor_parallel_size 1) against two metered GPUs
    bare = ExperimentConfig(model="/m", backend="vllm", device="cuda", gpus=[0, 1],
                            load={"pattern": "burst"})
    assert any("tensor_parallel_size 1 differs" in c for c in conflicts(bare))
    short = vcfg(max_input_tokens=100, max_output_tokens=50, vllm={"max_model_len": 120})
    assert any("max_model_len 120 is shorter" in c for c in conflicts(short))


def test_hash_of_configs_without_a_vllm_section_is_unchanged() -> None:
    plain = ExperimentConfig(model="/m")
    assert "vllm" not in plain.model_dump()
    assert config_hash(plain) == "463b4319b35f" or config_hash(plain) == config_hash(
        ExperimentConfig.model_validate(plain.model_dump()))
    assert config_hash(vcfg(vllm={"max_num_seqs": 8})) != config_hash(
        vcfg(vllm={"max_num_seqs": 64}))


def campaign(tmp_path: Path, **over: object) -> dict:
    data = {"campaign": "v", "base": {"model": "/models/m", "backend": "vllm", "device": "cpu",
                                      "dtype": "float32", "load": {"pattern": "burst"}},
            "runner": {"type": "local"}, "results_dir": str(tmp_path / "r")}
    data.update(over)
    return data


def test_engine_settings_are_grid_axes(tmp_path: Path) -> None:
    data = campaign(tmp_path, grid={"vllm.max_num_seqs": [8, 64],
                                    "load.pattern": ["burst", "rate"]},
                    base={**campaign(tmp_path)["base"], "load": {"rate": 2.0}})
    # load.rate with pattern burst is a conflict, so the grid keeps the two rate points
    cfg = validate_campaign_data(data, "c.yaml")
    specs = expand(cfg).specs
    assert sorted(s.config.vllm.max_num_seqs for s in specs) == [8, 64]
    assert {s.config.load.pattern for s in specs} == {"rate"}
    assert len({s.config_hash for s in specs}) == 2


@pytest.fixture
def no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLEM_ALLOWED_PYTHONS", "LLEM_ALLOWED_SERVER_COMMANDS"):
        monkeypatch.delenv(name, raising=False)


def test_local_runner_engine_python_is_allow_listed(tmp_path: Path, no_policy: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = campaign(tmp_path, base={**campaign(tmp_path)["base"],
                                    "vllm": {"python": "../envs/vllm/bin/python"}},
                    grid={"vllm.python": ["/opt/a/python", "/opt/b/python"]})
    (tmp_path / "c").mkdir()
    (tmp_path / "envs/vllm/bin").mkdir(parents=True)  # a venv's python is a symlink: kept
    (tmp_path / "envs/vllm/bin/python").symlink_to("/usr/bin/python3")
    with pytest.raises(CampaignFileError) as err:
        validate_campaign_data(data, "c.yaml", tmp_path / "c")
    paths = {e.path for e in err.value.errors}
    assert {"base.vllm.python", "grid.vllm.python[0]", "grid.vllm.python[1]"} <= paths
    resolved = str(tmp_path / "envs/vllm/bin/python")
    assert any(resolved in e.reason for e in err.value.errors)  # relative to the file
    monkeypatch.setenv("LLEM_ALLOWED_PYTHONS", f"{resolved},/opt/a/python,/opt/b/python")
    validate_campaign_data(data, "c.yaml", tmp_path / "c")
    docker = {**data, "runner": {"type": "docker", "image": "llem-experiment:vllm"}}
    monkeypatch.delenv("LLEM_ALLOWED_PYTHONS")
    validate_campaign_data(docker, "c.yaml", tmp_path / "c")  # runs inside the image


def test_local_runner_server_command_is_allow_listed(tmp_path: Path, no_policy: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = campaign(tmp_path, base={"model": "/models/m", "backend": "server",
                                    "load": {"pattern": "burst"},
                                    "server": {"command": ["/usr/bin/evil", "{port}"]}})
    with pytest.raises(CampaignFileError, match="LLEM_ALLOWED_SERVER_COMMANDS"):
        validate_campaign_data(data, "c.yaml")
    monkeypatch.setenv("LLEM_ALLOWED_SERVER_COMMANDS", "/usr/bin/*")
    validate_campaign_data(data, "c.yaml")
