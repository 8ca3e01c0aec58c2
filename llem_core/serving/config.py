"""The ``server:`` and ``load:`` sections of an experiment (``backend: server``).

Imports only pydantic: :mod:`llem_core.config` imports this module. Every field is
addressable as a grid axis (``load.rate``, ``server.max_num_seqs``, ...). Rules that relate
two fields (``pattern: rate`` needs ``rate``) live in :func:`llem_core.grid.conflicts`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Environment that makes an allow-listed program load or run code from elsewhere: the dynamic
# loader's and the interpreters' variables, the shell's start-up file, the search path for
# the programs it spawns (vLLM's compilers), the compilers themselves, and vLLM's logging
# configuration file (a dictConfig: its '()' factories call anything importable).
_CODE_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON")
_CODE_ENV_NAMES = frozenset({
    "PATH", "BASH_ENV", "ENV", "GCONV_PATH", "CC", "CXX", "VLLM_LOGGING_CONFIG_PATH",
    "NODE_OPTIONS", "NODE_PATH",
    "PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
})


def checked_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` if every entry is a usable variable that runs no other code; else ValueError."""
    for k, val in env.items():
        if not _ENV_NAME.fullmatch(k) or "\x00" in val:
            raise ValueError(f"{k!r} is not a usable environment variable name/value")
        if k.upper().startswith(_CODE_ENV_PREFIXES) or k.upper() in _CODE_ENV_NAMES:
            raise ValueError(f"{k} is refused: it makes the launched program load or run "
                             "other code (code execution under an allow-listed program)")
    return env


def placeholder_problem(what: str, program: str | None) -> None:
    """ValueError if a launched program holds '{port}' or '{model}': the substitution comes
    after every check, and would make the port or the model path the program."""
    if program is not None and ("{port}" in program or "{model}" in program):
        raise ValueError(f"{what} {program!r} holds a placeholder ({{port}}/{{model}}): the "
                         "program must be named literally")


class ServerSettings(_Strict):
    """An OpenAI-compatible server: launched by llem (``command``) or already running (``url``)."""

    command: list[str] | None = Field(
        None, min_length=1,
        description="argv of the server, started without a shell in its own process group; "
        "'{port}' and '{model}' inside an argument are replaced by the port and the model "
        "(not in the program, command[0]).")
    url: str | None = Field(
        None, description="Base URL of a server already running (e.g. http://127.0.0.1:8000); "
        "its idle power before it started cannot be measured.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Port for a launched server; default: a free one.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of a launched server; loader "
        "and interpreter variables (LD_*, PYTHON*, PATH, ...) are refused.")
    health_path: str = Field("/health", description="GET path answering 200 once ready.")
    startup_timeout_s: float = Field(
        600.0, gt=0.0, le=7200.0, description="Give up if not healthy within this time.")
    stop_timeout_s: float = Field(
        20.0, gt=0.0, le=600.0, description="SIGTERM grace before the group is SIGKILLed.")
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="/v1/completions or /v1/chat/completions.")
    model_name: str | None = Field(
        None, description="The 'model' field of requests; default: the experiment's model.")
    fixed_length: Literal["ignore_eos", "generation_config", "none"] = Field(
        "ignore_eos",
        description="How exactly max_output_tokens are asked for: ignore_eos+min_tokens "
        "(vLLM, SGLang), a generation_config JSON (transformers serve), or not at all.")
    token_ids: bool = Field(
        False, description="Ask for each chunk's token ids (vLLM's return_token_ids), so that "
        "a chunk carrying several tokens (a stream coalesced under load) counts them all; "
        "otherwise a chunk with text counts as one token.")
    max_num_seqs: int | None = Field(
        None, ge=1, description="The engine's most concurrent sequences (its batch "
        "capacity); sets the steady-state window's target occupancy.")
    loaded_baseline_s: float = Field(
        10.0, ge=0.0, le=600.0,
        description="Seconds of power sampled with the engine loaded and no request; 0 skips.")
    metrics_path: str | None = Field(
        "/metrics", description="Prometheus path sampled during the load; null: none.")
    metrics_interval_s: float = Field(1.0, gt=0.0, le=60.0, description="Sampling period.")
    request_timeout_s: float = Field(
        600.0, gt=0.0, le=7200.0, description="Longest time one streamed request may take.")

    @field_validator("health_path", "metrics_path")
    @classmethod
    def _absolute_path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"{v!r} must start with '/'")
        return v

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v.rstrip("/") if v else v

    @field_validator("command")
    @classmethod
    def _program_is_literal(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            placeholder_problem("command[0]", v[0])
            if any("\x00" in arg for arg in v):
                raise ValueError("an argument holds a NUL byte")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return checked_env(v)


class LoadSettings(_Strict):
    """How requests arrive at the server, and how the steady state is judged."""

    pattern: Literal["burst", "concurrency", "rate"] = Field(
        "concurrency", description="burst: all requests at t=0; concurrency: N in flight; "
        "rate: R requests/s with Poisson or gamma arrivals.")
    concurrency: int | None = Field(None, ge=1, le=100_000, description="N (concurrency).")
    rate: float | None = Field(None, gt=0.0, le=1e6, description="R requests/s (rate).")
    arrival: Literal["poisson", "gamma"] = Field(
        "poisson", description="Inter-arrival law of a rate load.")
    burstiness: float = Field(
        1.0, gt=0.0, le=100.0, description="Gamma shape (as vllm bench serve); 1 = Poisson, "
        "< 1 burstier, > 1 more regular.")
    num_requests: int | None = Field(
        None, ge=1, le=10_000_000, description="Requests sent; default: one per prompt "
        "(prompt i mod the prompt count).")
    seed: int = Field(0, ge=0, description="Seed of the arrival schedule.")
    fixed_output: bool = Field(
        True, description="Ask for exactly max_output_tokens per request (see "
        "server.fixed_length); whether the engine honoured it is recorded.")
    warmup_requests: int = Field(
        2, ge=0, le=10_000, description="Unmeasured requests sent before the load.")
    target_occupancy: int | None = Field(
        None, ge=1, description="Requests decoding at once that define the steady state; "
        "default: min(server.max_num_seqs, concurrency or num_requests), else estimated.")
    min_window_s: float = Field(
        30.0, ge=0.0, le=86_400.0,
        description="A steady-state window shorter than this is flagged.")
    min_fill_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Flag the window if it holds target occupancy for "
        "less than this fraction of its time (the batch did not fill).")
    energy_interval_s: float = Field(
        0.25, gt=0.0, le=60.0,
        description="Meter marks are taken this often during the load (per-request energy "
        "and the window's edges are resolved to this grid).")


# Flags llem sets itself from the experiment (model, port, host, batch limit, dtype, ...):
# an extra_args entry naming one would silently contradict the recorded configuration.
VLLM_OWNED_FLAGS = frozenset({
    "--model", "--port", "--host", "--served-model-name", "--max-num-seqs", "--max-model-len",
    "--gpu-memory-utilization", "--tensor-parallel-size", "-tp", "--enforce-eager",
    "--dtype", "--kv-cache-dtype", "--quantization", "-q", "--seed", "--uds",
})
# Flags that make vLLM import or run code the campaign names (a file, a module or a class):
# under an allow-listed interpreter that runs anything the campaign's author wants.
VLLM_CODE_FLAGS = frozenset({
    "--tool-parser-plugin", "--reasoning-parser-plugin", "--middleware", "--worker-cls",
    "--worker-extension-cls", "--trust-remote-code", "--logits-processors", "--scheduler-cls",
    "--distributed-executor-backend", "--kv-transfer-config", "--ec-transfer-config",
    "--ec-manager-config", "--logging-config", "--log-config-file",
})
# The engine's environment llem sets itself: its GPUs (an override would run the engine on
# GPUs the meters do not watch), hub access for a local model, and the engine's address.
VLLM_OWNED_ENV = frozenset({
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
    "HF_HUB_OFFLINE", "VLLM_HOST_IP", "VLLM_PORT",
})
_VLLM_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
_OWNED = ("is set by llem from the experiment's fields (use the vllm.* field or the "
          "experiment field instead)")
_REFUSED_LONG = {
    **{f: _OWNED for f in VLLM_OWNED_FLAGS if f.startswith("--")},
    **{"--no-" + f[2:]: _OWNED for f in VLLM_OWNED_FLAGS if f.startswith("--")},
    **{f: "makes vLLM import or run code the campaign names (code execution under an "
          "allow-listed interpreter)" for f in VLLM_CODE_FLAGS},
    "--config": "loads engine arguments from a file, past these checks",
}
_OWNED_SHORT = sorted(f for f in VLLM_OWNED_FLAGS if not f.startswith("--"))
# Real vLLM flags that begin a refused one: argparse takes an exact match as it is.
_VLLM_EXACT_FLAGS = frozenset({"--reasoning-parser"})


def _shown(text: str) -> str:
    return text if text.isprintable() else repr(text)


def vllm_flag_problem(arg: str) -> str | None:
    """Why the engine argument ``arg`` may not be passed, or None.

    Read as vLLM reads it: the name before '=' (and before '.', its JSON-field syntax) with
    '_' as '-'; argparse also takes an unambiguous prefix of a long flag, and a short flag
    with its value attached (``-tp2``, ``-qfp8``).
    """
    if not arg.startswith("-"):
        return None  # a value
    given = arg.split("=", 1)[0].split(".", 1)[0]
    name = given.replace("_", "-")
    if not name.startswith("--"):
        for short in _OWNED_SHORT:
            if name == short:
                return f"{_shown(given)} {_OWNED}"
            if name.startswith(short):
                return f"{_shown(given)} is {short} with a value attached; {short} {_OWNED}"
            if len(name) >= 2 and short.startswith(name):
                return f"{_shown(given)} abbreviates {short}, which {_OWNED}"
        return None
    if name in _VLLM_EXACT_FLAGS or len(name) < 3:
        return None
    for flag in sorted(_REFUSED_LONG):
        if name == flag:
            spelled = "" if given == flag else f" ({flag})"
            return f"{_shown(given)}{spelled} {_REFUSED_LONG[flag]}"
        if flag.startswith(name):
            return f"{_shown(given)} abbreviates {flag}, which {_REFUSED_LONG[flag]}"
    return None


class VllmSettings(_Strict):
    """``backend: vllm``: the vLLM OpenAI-compatible server llem starts for the experiment.

    llem launches ``<python> -m vllm.entrypoints.openai.api_server`` (no shell) with these
    engine settings, the experiment's model, ``dtype`` and ``seed``; every field is a grid
    axis (``vllm.max_num_seqs: [8, 64]``).
    """

    python: str | None = Field(
        None, description="Interpreter of the engine's environment (vLLM pins its own torch "
        "and transformers); default: the experiment's own. A relative path is relative to "
        "the campaign file; the local runner needs it in LLEM_ALLOWED_PYTHONS.")
    max_num_seqs: int = Field(
        256, ge=1, le=65_536, description="--max-num-seqs: the engine's batch capacity; sets "
        "the steady-state window's target occupancy.")
    max_model_len: int | None = Field(
        None, ge=16, le=10_485_760, description="--max-model-len; default: the model's.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0.0, le=1.0, description="--gpu-memory-utilization; default: vLLM's (0.9).")
    tensor_parallel_size: int = Field(
        1, ge=1, le=256, description="--tensor-parallel-size; must equal the number of gpus.")
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
        description="More engine arguments, appended as given (an argv list, no shell); "
        "flags llem sets from other fields (in any spelling vLLM accepts), --config and "
        "flags that load code (plugins, classes, --trust-remote-code) are refused.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the engine (e.g. "
        "VLLM_CPU_KVCACHE_SPACE on a CPU); VLLM_CACHE_ROOT defaults to a fresh folder. "
        "What llem sets (CUDA_VISIBLE_DEVICES, HF_HUB_OFFLINE, VLLM_HOST_IP, VLLM_PORT) and "
        "loader/interpreter variables (LD_*, PYTHON*, PATH, ...) are refused.")
    startup_timeout_s: float = Field(
        1800.0, gt=0.0, le=7200.0, description="Give up if /health is not 200 by then.")
    stop_timeout_s: float = Field(
        30.0, gt=0.0, le=600.0, description="SIGTERM grace before the group is SIGKILLed.")
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="/v1/completions or /v1/chat/completions.")
    token_ids: bool = Field(
        True, description="Ask for each chunk's token ids (return_token_ids), so a chunk "
        "vLLM coalesced under load counts every token it carries; costs the engine some "
        "serialisation (3-5 % of throughput measured on a 2-core CPU engine, "
        "bench/RESULTS.md). false: one token per chunk with text, as vllm bench serve.")
    loaded_baseline_s: float = Field(
        10.0, ge=0.0, le=600.0,
        description="Seconds of power sampled with the engine loaded and no request; 0 skips.")
    metrics_interval_s: float = Field(1.0, gt=0.0, le=60.0,
                                      description="Sampling period of /metrics.")
    request_timeout_s: float = Field(
        600.0, gt=0.0, le=7200.0, description="Longest time one streamed request may take.")

    @field_validator("python")
    @classmethod
    def _python_is_literal(cls, v: str | None) -> str | None:
        placeholder_problem("vllm.python", v)
        return v

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, v: list[str]) -> list[str]:
        for arg in v:
            problem = vllm_flag_problem(arg)
            if problem:
                raise ValueError(problem)
            if "\x00" in arg:
                raise ValueError("an argument holds a NUL byte")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        checked_env(v)
        owned = sorted(k for k in v if k.upper() in VLLM_OWNED_ENV)
        if owned:
            raise ValueError(f"{owned[0]} is set by llem (the engine's GPUs from gpus, "
                             "offline mode for a local model, the engine's address)")
        return v
