"""``backend: llamacpp``: llama.cpp through llama-cpp-python's OpenAI-compatible server.

llem launches ``<python> -m llama_cpp.server --model <file.gguf> --host 127.0.0.1 --port N``
(no shell) from the ``llamacpp:`` section, in the engine's own environment
(``llamacpp.python``; ``scripts/setup_llamacpp_env.sh`` builds one for the CPU). The
experiment's ``model`` is the GGUF file (``llem make-tiny-model --gguf`` converts the tiny
model; its ``dtype`` is the file's). The server answers one request at a time, so its batch
capacity is 1; it has no health or metrics endpoint (``/v1/models`` answers once the model
is loaded) and no version request (the interpreter reports the distribution's). llem turns
off its default of cutting a streamed request short when the next one arrives. A fixed
output length is asked for with ``min_tokens``; usage counts are not streamed, so tokens
are counted as received. It is never kept between experiments: its prompt cache is unknown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from llem_core.runtime.engines.base import LaunchedEngine, context_conflicts
from llem_core.runtime.engines.settings import InterpreterSettings, launched_field

if TYPE_CHECKING:
    from llem_core.campaign.config import ExperimentConfig


class LlamaCppSettings(InterpreterSettings):
    """``backend: llamacpp``: the llama-cpp-python server llem starts for the experiment."""

    n_ctx: int | None = Field(
        None, ge=16, le=1_048_576, description="--n_ctx, the context in tokens; default: "
        "the server's (2048). Must hold max_input_tokens + max_output_tokens.")
    n_threads: int | None = Field(
        None, ge=1, le=1024, description="--n_threads (and --n_threads_batch); default: the "
        "server's (half the CPUs).")
    n_batch: int | None = Field(
        None, ge=1, le=65_536, description="--n_batch, prompt tokens per decode call.")
    n_gpu_layers: int = Field(
        0, ge=-1, le=100_000, description="--n_gpu_layers: layers offloaded to a GPU "
        "(-1: all; needs a GPU build of llama-cpp-python); 0 on a CPU.")
    max_num_seqs: int = launched_field(
        "max_num_seqs", default=1, le=1, description="The server's batch capacity: "
        "llama-cpp-python answers one request at a time (1).")


class LlamaCppEngine(LaunchedEngine):
    name = "llamacpp"
    summary = "llama.cpp via llama-cpp-python's OpenAI-compatible server (GGUF models)"
    section = "llamacpp"
    settings = LlamaCppSettings
    module = "llama_cpp.server"
    health_path = "/v1/models"
    model_is_file = True
    metrics_path = None
    distribution = "llama_cpp_python"
    library = "llama-cpp-python"

    def argv(self, cfg: ExperimentConfig, python: str | None = None) -> list[str]:
        e = self.section_of(cfg)
        argv = [
            *self.program(cfg, python), "--model", cfg.model,
            "--host", "127.0.0.1", "--port", "{port}",
            "--seed", str(cfg.seed), "--n_gpu_layers", str(e.n_gpu_layers),
            # by default a new request cuts the one being streamed short: every request
            # of a load but the last would end after one token
            "--interrupt_requests", "false"]
        if e.n_ctx is not None:
            argv += ["--n_ctx", str(e.n_ctx)]
        if e.n_threads is not None:
            argv += ["--n_threads", str(e.n_threads), "--n_threads_batch", str(e.n_threads)]
        if e.n_batch is not None:
            argv += ["--n_batch", str(e.n_batch)]
        return argv

    def engine_conflicts(self, cfg: ExperimentConfig) -> list[str]:
        e = self.section_of(cfg)
        out = context_conflicts(cfg, "llamacpp.n_ctx", e.n_ctx)
        if cfg.device == "cpu" and e.n_gpu_layers != 0:
            out.append(f"llamacpp.n_gpu_layers {e.n_gpu_layers} offloads layers to a GPU "
                       "but device is cpu")
        return out


ENGINE = LlamaCppEngine()
