"""``backend: trtllm``: NVIDIA TensorRT-LLM's OpenAI-compatible server, ``trtllm-serve``.

llem launches ``trtllm-serve <model> --host 127.0.0.1 --port N --backend pytorch
--max_batch_size N --tp_size N ...`` (no shell) from the ``trtllm:`` section, in the image
``docker/Dockerfile.trtllm`` (FROM NVIDIA's release image). It needs NVIDIA GPUs; its
``/metrics`` is JSON iteration statistics, not Prometheus, so no engine gauges are sampled.
Launch tested (argv, settings, a fake server), never run: no machine this project is built
and checked on holds the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from llem_core.runtime.engines.base import (
    ALL_DTYPES,
    LaunchedEngine,
    Program,
    context_conflicts,
    gpu_only_conflicts,
    parallel_conflicts,
)
from llem_core.runtime.engines.settings import (
    LaunchedSettings,
    context_field,
    launched_field,
    parallel_field,
    placeholder_problem,
)

if TYPE_CHECKING:
    from llem_core.campaign.config import ExperimentConfig


class TrtllmSettings(LaunchedSettings):
    """``backend: trtllm``: the trtllm-serve server llem starts for the experiment."""

    program: str = Field(
        "trtllm-serve", min_length=1, description="The trtllm-serve program (a bare name "
        "on the PATH, or an absolute path); the local runner needs it in "
        "LLEM_ALLOWED_SERVER_COMMANDS.")
    runtime: Literal["pytorch", "tensorrt"] = Field(
        "pytorch", description="--backend: TensorRT-LLM's PyTorch path or a TensorRT engine.")
    max_num_seqs: int = launched_field(
        "max_num_seqs", default=256, description="--max_batch_size: the engine's batch "
        "capacity; sets the steady-state window's target occupancy.")
    max_num_tokens: int | None = Field(
        None, ge=1, le=1_048_576, description="--max_num_tokens per batch; default: "
        "TensorRT-LLM's.")
    max_seq_len: int | None = context_field("--max_seq_len")
    tensor_parallel_size: int = parallel_field("--tp_size")
    kv_cache_free_gpu_memory_fraction: float | None = Field(
        None, gt=0.0, le=1.0, description="--kv_cache_free_gpu_memory_fraction.")
    startup_timeout_s: float = launched_field("startup_timeout_s", default=3600.0)
    stop_timeout_s: float = launched_field("stop_timeout_s", default=30.0)

    @field_validator("program")
    @classmethod
    def _program_is_literal(cls, v: str) -> str:
        placeholder_problem("trtllm.program", v)
        return v


class TrtllmEngine(LaunchedEngine):
    name = "trtllm"
    summary = "TensorRT-LLM's trtllm-serve (NVIDIA GPUs; image docker/Dockerfile.trtllm)"
    section = "trtllm"
    settings = TrtllmSettings
    programs = (Program("program", "server_command"),)
    dtypes = ALL_DTYPES - {"float32"}
    metrics_path = None
    version_path = "/version"
    library = "tensorrt_llm"

    def program(self, cfg: ExperimentConfig, python: str | None = None) -> list[str]:
        return [self.section_of(cfg).program]

    def argv(self, cfg: ExperimentConfig, python: str | None = None) -> list[str]:
        e = self.section_of(cfg)
        argv = [
            *self.program(cfg), cfg.model, "--host", "127.0.0.1", "--port", "{port}",
            "--backend", e.runtime,
            "--max_batch_size", str(e.max_num_seqs), "--tp_size", str(e.tensor_parallel_size)]
        for flag, value in (("--max_num_tokens", e.max_num_tokens),
                            ("--max_seq_len", e.max_seq_len),
                            ("--kv_cache_free_gpu_memory_fraction",
                             e.kv_cache_free_gpu_memory_fraction)):
            if value is not None:
                argv += [flag, repr(value) if isinstance(value, float) else str(value)]
        return argv

    def engine_conflicts(self, cfg: ExperimentConfig) -> list[str]:
        e = self.section_of(cfg)
        return gpu_only_conflicts(cfg) + parallel_conflicts(
            cfg, "trtllm.tensor_parallel_size", e.tensor_parallel_size) + context_conflicts(
            cfg, "trtllm.max_seq_len", e.max_seq_len)


ENGINE = TrtllmEngine()
