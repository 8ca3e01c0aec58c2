"""``backend: sglang``: SGLang's OpenAI-compatible server, ``python -m sglang.launch_server``.

llem launches ``<python> -m sglang.launch_server --model-path <model> --host 127.0.0.1
--port N --tp-size N --max-running-requests N --dtype D --random-seed S --enable-metrics``
(no shell) from the ``sglang:`` section, in the image ``docker/Dockerfile.sglang`` (FROM
the project's release image). It needs GPUs. Launch tested (argv, settings, a fake
server), never run: no machine this project is built and checked on holds the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from llem_core.runtime.engines.base import (
    LaunchedEngine,
    context_conflicts,
    gpu_only_conflicts,
    parallel_conflicts,
)
from llem_core.runtime.engines.settings import (
    InterpreterSettings,
    context_field,
    launched_field,
    parallel_field,
)

if TYPE_CHECKING:
    from llem_core.campaign.config import ExperimentConfig


class SglangSettings(InterpreterSettings):
    """``backend: sglang``: the SGLang server llem starts for the experiment."""

    max_num_seqs: int = launched_field(
        "max_num_seqs", default=256, description="--max-running-requests: the engine's "
        "batch capacity; sets the steady-state window's target occupancy.")
    context_length: int | None = context_field("--context-length")
    mem_fraction_static: float | None = Field(
        None, gt=0.0, le=1.0, description="--mem-fraction-static; default: SGLang's.")
    tensor_parallel_size: int = parallel_field("--tp-size")
    startup_timeout_s: float = launched_field("startup_timeout_s", default=1800.0)
    stop_timeout_s: float = launched_field("stop_timeout_s", default=30.0)


class SglangEngine(LaunchedEngine):
    name = "sglang"
    summary = "SGLang's launch_server (GPUs; image docker/Dockerfile.sglang)"
    section = "sglang"
    settings = SglangSettings
    module = "sglang.launch_server"
    version_path = "/version"
    library = "sglang"

    def argv(self, cfg: ExperimentConfig, python: str | None = None) -> list[str]:
        e = self.section_of(cfg)
        argv = [
            *self.program(cfg, python), "--model-path", cfg.model,
            "--host", "127.0.0.1", "--port", "{port}",
            "--tp-size", str(e.tensor_parallel_size),
            "--max-running-requests", str(e.max_num_seqs), "--dtype", str(cfg.dtype),
            "--random-seed", str(cfg.seed), "--enable-metrics"]
        if e.context_length is not None:
            argv += ["--context-length", str(e.context_length)]
        if e.mem_fraction_static is not None:
            argv += ["--mem-fraction-static", repr(e.mem_fraction_static)]
        return argv

    def engine_conflicts(self, cfg: ExperimentConfig) -> list[str]:
        e = self.section_of(cfg)
        return gpu_only_conflicts(cfg) + parallel_conflicts(
            cfg, "sglang.tensor_parallel_size", e.tensor_parallel_size) + context_conflicts(
            cfg, "sglang.context_length", e.context_length)


ENGINE = SglangEngine()
