"""The ``server:`` and ``load:`` sections of an experiment (``backend: server``).

Imports only pydantic and :mod:`llem_core.text_rules`: :mod:`llem_core.config` imports
this module. Every field is addressable as a grid axis (``load.rate``,
``server.max_num_seqs``, ...). Rules that relate two fields (``pattern: rate`` needs
``rate``) live in :func:`llem_core.grid.conflicts`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator

from llem_core.serving.engine_env import GPU_SELECTION_ENV, checked_env, gpu_env_problem
from llem_core.serving.vllm_flags import vllm_flag_problem
from llem_core.text_rules import TextChecked


class _Strict(TextChecked):
    """Unknown keys are errors; text holds no control characters (as config_base.Strict)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Floors of the periods and rates that drive a loop or a sleep: a value such as 1e-300 s
# passes gt=0 and turns a sampler into a busy loop, or a rate into a load that never ends.
MIN_SAMPLING_INTERVAL_S = 0.001
MIN_METRICS_INTERVAL_S = 0.01
MIN_RATE = 0.001

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_URL_PATH = re.compile(r"[A-Za-z0-9._~/%-]*")
_PORT = re.compile(r"[0-9]{1,5}")


def _host_problem(host: str, bracketed: bool) -> str | None:
    if bracketed:
        try:
            if "%" in host:  # a zone id names an interface of the machine that reads it
                raise ValueError(host)
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"[{host}] is not an IPv6 address"
        return None
    try:
        ipaddress.IPv4Address(host)
        return None
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(lb) for lb in labels) \
            or labels[-1].isdigit():
        return f"{host!r} is neither an IP address nor a host name"
    return None


def checked_server_url(url: str) -> str:
    """``url`` (its trailing '/' removed) if it is a plain http(s) base URL: a host, an
    optional port 1-65535 and path; no credentials, query or fragment. Else ValueError."""
    shown = repr(url)
    if not url.isascii() or not url.isprintable() or any(c in url for c in " \\"):
        raise ValueError(f"{shown} holds whitespace, a backslash or a non-ASCII character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. brackets around something that is no IPv6 address
        raise ValueError(f"{shown} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not url.lower().startswith(
            parts.scheme + "://"):
        raise ValueError(f"{shown} is not an http(s) URL (http://host:port)")
    if "@" in parts.netloc:
        raise ValueError(f"{shown} holds credentials (user:password@): they would be stored "
                         "in the DAG and every result")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"{shown} has a query or fragment: give the server's base URL")
    netloc = parts.netloc
    bracketed = netloc.startswith("[")
    host_part, sep, port = (netloc.rpartition(":") if not bracketed or "]:" in netloc
                            else (netloc, "", ""))
    if not sep:
        host_part, port = netloc, ""
    if bracketed:
        if not (host_part.startswith("[") and host_part.endswith("]")):
            raise ValueError(f"{shown}: malformed IPv6 host (write it as [::1])")
        host = host_part[1:-1]
    else:
        host = host_part
    if not host:
        raise ValueError(f"{shown} has no host")
    problem = _host_problem(host.lower(), bracketed)
    if problem:
        raise ValueError(f"{shown}: {problem}")
    if sep and not (_PORT.fullmatch(port) and 1 <= int(port) <= 65535):
        raise ValueError(f"{shown}: port {port!r} is not a number from 1 to 65535")
    if not _URL_PATH.fullmatch(parts.path) or "/../" in parts.path + "/" \
            or "/./" in parts.path + "/":
        raise ValueError(f"{shown}: the path may hold only letters, digits and ._~-/ "
                         "without '.' or '..' segments")
    return url.rstrip("/")


def url_host(url: str) -> str:
    """The host of a URL that :func:`checked_server_url` accepted (brackets removed)."""
    return (urlsplit(url).hostname or "").lower()


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        default_factory=dict, description="Extra environment of a launched server: "
        "variables that tune threads, memory and logging (README 'Engines'; the deployment "
        "may allow more); GPU selection and variables that load code are refused.")
    health_path: str = Field("/health", description="GET path answering 200 once ready.")
    startup_timeout_s: float = Field(
        600.0, ge=1.0, le=7200.0, description="Give up if not healthy within this time.")
    stop_timeout_s: float = Field(
        20.0, ge=0.1, le=600.0, description="SIGTERM grace before the group is SIGKILLed.")
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
    metrics_interval_s: float = Field(
        1.0, ge=MIN_METRICS_INTERVAL_S, le=60.0, description="Sampling period.")
    request_timeout_s: float = Field(
        600.0, ge=1.0, le=7200.0, description="Longest time one streamed request may take.")

    @field_validator("health_path", "metrics_path")
    @classmethod
    def _absolute_path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"{v!r} must start with '/'")
        return v

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return None if v is None else checked_server_url(v)

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
    rate: float | None = Field(
        None, ge=MIN_RATE, le=1e6, description="R requests/s (rate), at least one request "
        "per 1000 s; the arrival schedule must end within execution.experiment_timeout_s.")
    arrival: Literal["poisson", "gamma"] = Field(
        "poisson", description="Inter-arrival law of a rate load.")
    burstiness: float = Field(
        1.0, ge=0.01, le=100.0, description="Gamma shape (as vllm bench serve); 1 = Poisson, "
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
        0.25, ge=MIN_SAMPLING_INTERVAL_S, le=60.0,
        description="Meter marks are taken this often during the load (per-request energy "
        "and the window's edges are resolved to this grid).")


# The engine's environment llem sets itself: its GPUs (an override would run the engine on
# GPUs the meters do not watch), hub access for a local model, and the engine's address.
VLLM_OWNED_ENV = GPU_SELECTION_ENV | {"HF_HUB_OFFLINE", "VLLM_HOST_IP", "VLLM_PORT"}
_VLLM_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


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
        description="More engine arguments, appended as given (an argv list, no shell): "
        "flags of the allow-list in README 'Engines' (parallelism, batch limits, KV cache, "
        "chunked prefill, prefix caching, ...), written in full, with checked values; the "
        "deployment may allow more (LLEM_ALLOWED_VLLM_FLAGS). Flags llem sets from other "
        "fields (in any spelling vLLM accepts) and --config are always refused.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the engine (e.g. "
        "VLLM_CPU_KVCACHE_SPACE on a CPU); VLLM_CACHE_ROOT defaults to a fresh folder. "
        "Only variables that tune threads, memory, logging and vLLM (README 'Engines'; the "
        "deployment may allow more); what llem sets (CUDA_VISIBLE_DEVICES, HF_HUB_OFFLINE, "
        "VLLM_HOST_IP, VLLM_PORT) and variables that load code are refused.")
    startup_timeout_s: float = Field(
        1800.0, ge=1.0, le=7200.0, description="Give up if /health is not 200 by then.")
    stop_timeout_s: float = Field(
        30.0, ge=0.1, le=600.0, description="SIGTERM grace before the group is SIGKILLed.")
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
    metrics_interval_s: float = Field(1.0, ge=MIN_METRICS_INTERVAL_S, le=60.0,
                                      description="Sampling period of /metrics.")
    request_timeout_s: float = Field(
        600.0, ge=1.0, le=7200.0, description="Longest time one streamed request may take.")

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
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        checked_env(v)
        gpus = next(filter(None, map(gpu_env_problem, v)), None)
        if gpus:
            raise ValueError(gpus)
        owned = sorted(k for k in v if k.upper() in VLLM_OWNED_ENV)
        if owned:
            raise ValueError(f"{owned[0]} is set by llem (the engine's GPUs from gpus, "
                             "offline mode for a local model, the engine's address)")
        return v
