"""Rules relating the fields of a ``backend: server`` experiment (filtered in a grid)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llem_core.config import ExperimentConfig


def serving_conflicts(cfg: ExperimentConfig) -> list[str]:
    """Reasons a configuration with (or needing) server/load/vllm sections cannot run."""
    applies = {"server": ("server",), "load": ("server", "vllm"), "vllm": ("vllm",)}
    out = [f"{k} is set but backend is {cfg.backend} (it applies to backend "
           f"{' or '.join(b)})" for k, b in applies.items()
           if getattr(cfg, k) is not None and cfg.backend not in b]
    if cfg.backend not in ("server", "vllm"):
        return out
    server, load = cfg.server, cfg.load
    if cfg.prompts.kind == "builtin" and cfg.prompts.length > cfg.max_input_tokens:
        out.append(f"backend {cfg.backend} sends each prompt whole (only backend pytorch "
                   f"truncates): prompts.length {cfg.prompts.length} words are at least as "
                   f"many tokens, more than max_input_tokens ({cfg.max_input_tokens})")
    if cfg.backend == "server":
        if server is None:
            out.append("backend server needs a server section (server.command or server.url)")
        elif (server.command is None) == (server.url is None):
            out.append("server needs exactly one of server.command and server.url")
    else:
        out += _vllm_conflicts(cfg)  # the defaults of an absent vllm section count too
    if load is None:
        out.append(f"backend {cfg.backend} needs a load section (load.pattern ...)")
        return out
    if load.pattern == "concurrency" and load.concurrency is None:
        out.append("load.pattern concurrency needs load.concurrency")
    if load.pattern != "concurrency" and load.concurrency is not None:
        out.append(f"load.concurrency is set but load.pattern is {load.pattern}")
    if load.pattern == "rate" and load.rate is None:
        out.append("load.pattern rate needs load.rate")
    if load.pattern != "rate" and load.rate is not None:
        out.append(f"load.rate is set but load.pattern is {load.pattern}")
    if load.arrival == "poisson" and load.burstiness != 1.0:
        out.append(f"load.burstiness {load.burstiness:g} needs load.arrival gamma "
                   "(Poisson arrivals have burstiness 1)")
    return out


def planned_requests(cfg: ExperimentConfig) -> int | None:
    """Requests a load sends: load.num_requests, else one per prompt (None: not known
    before the prompts file is read)."""
    if cfg.load is not None and cfg.load.num_requests is not None:
        return cfg.load.num_requests
    return cfg.prompts.count if cfg.prompts.kind == "builtin" else cfg.prompts.limit


def timeout_conflicts(cfg: ExperimentConfig, timeout_s: float) -> list[str]:
    """What the experiment certainly spends, against its task's timeout: a configuration
    that cannot end within it would be killed every time, after its engine and baselines."""
    out = []
    load = cfg.load
    n = planned_requests(cfg)
    if cfg.backend in ("server", "vllm") and load is not None and load.pattern == "rate" \
            and load.rate is not None and n is not None:
        # the mean of the seeded gamma schedule; its last request is sent only then
        planned = (n - 1) / load.rate
        if planned >= timeout_s:
            out.append(f"load: {n} requests (load.num_requests, else the prompt count) at "
                       f"load.rate {load.rate:g}/s take about {planned:.0f} s to send, not "
                       f"less than execution.experiment_timeout_s ({timeout_s:g} s): the load "
                       "would never finish")
    if cfg.backend == "pytorch" and cfg.energy.min_window_s >= timeout_s:
        out.append(f"energy.min_window_s ({cfg.energy.min_window_s:g} s) is not less than "
                   f"execution.experiment_timeout_s ({timeout_s:g} s)")
    return out


def _vllm_conflicts(cfg: ExperimentConfig) -> list[str]:
    from llem_core.serving.config import VllmSettings

    engine = cfg.vllm or VllmSettings()
    out = []
    if cfg.device != "cpu" and engine.tensor_parallel_size != len(cfg.gpus):
        out.append(f"vllm.tensor_parallel_size {engine.tensor_parallel_size} differs from the "
                   f"{len(cfg.gpus)} gpus metered ({cfg.gpus}): energy would miss GPUs or "
                   "count idle ones")
    if engine.max_model_len is not None and engine.max_model_len < (
            cfg.max_input_tokens + cfg.max_output_tokens):
        out.append(f"vllm.max_model_len {engine.max_model_len} is shorter than "
                   f"max_input_tokens + max_output_tokens "
                   f"({cfg.max_input_tokens + cfg.max_output_tokens})")
    return out
