"""The settings every served engine shares: the ``load:`` section, the fields of a server
llem talks to (:class:`LaunchedSettings`, the base of every launched engine's section with
per-engine defaults through :func:`launched_field`) and the generic ``server:`` section.

All of them are :class:`llem_core.campaign.config_base.Strict` models, the one strict base of every
config model: unknown keys, booleans given as numbers, non-finite floats and control
characters are refused the same way in every section. Every field is addressable as a grid
axis (``load.rate``, ``server.max_num_seqs``, ...). Rules that relate two fields live with
the engines (:meth:`llem_core.runtime.engines.base.Engine.conflicts`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo

from llem_core.campaign.config_base import MAX_SEED, Strict
from llem_core.runtime.engines.urls import checked_server_url
from llem_core.runtime.serving.engine_env import checked_env, gpu_env_problem

# Floors of the periods and rates that drive a loop or a sleep: a value such as 1e-300 s
# passes gt=0 and turns a sampler into a busy loop, or a rate into a load that never ends.
MIN_SAMPLING_INTERVAL_S = 0.001
MIN_METRICS_INTERVAL_S = 0.01
MIN_RATE = 0.001
# The most sequences an engine batches (vLLM's own bound of --max-num-seqs is far below).
MAX_NUM_SEQS = 65_536


def placeholder_problem(what: str, program: str | None) -> None:
    """ValueError if a launched program holds '{port}' or '{model}': the substitution comes
    after every check, and would make the port or the model path the program."""
    if program is not None and ("{port}" in program or "{model}" in program):
        raise ValueError(f"{what} {program!r} holds a placeholder ({{port}}/{{model}}): the "
                         "program must be named literally")


class LaunchedSettings(Strict):
    """What llem needs of any server it sends a load to: its environment when launched, how
    long it may take, what requests look like, and the periods of what is sampled."""

    # variables llem sets in the engine's environment itself (besides its GPUs): refused
    owned_env: ClassVar[frozenset[str]] = frozenset()

    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of a launched server: "
        "variables that tune threads, memory and logging (README 'Engines'; the deployment "
        "may allow more); GPU selection and variables that load code are refused.")
    startup_timeout_s: float = Field(
        600.0, ge=1.0, le=7200.0, description="Give up if not healthy within this time.")
    stop_timeout_s: float = Field(
        20.0, ge=0.1, le=600.0, description="SIGTERM grace before the group is SIGKILLed.")
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="/v1/completions or /v1/chat/completions.")
    token_ids: bool = Field(
        False, description="Ask for each chunk's token ids (vLLM's return_token_ids), so that "
        "a chunk carrying several tokens (a stream coalesced under load) counts them all; "
        "otherwise a chunk with text counts as one token.")
    max_num_seqs: int | None = Field(
        None, ge=1, le=MAX_NUM_SEQS, description="The engine's most concurrent sequences "
        "(its batch capacity); sets the steady-state window's target occupancy.")
    loaded_baseline_s: float = Field(
        10.0, ge=0.0, le=600.0,
        description="Seconds of power sampled with the engine loaded and no request; 0 skips.")
    metrics_interval_s: float = Field(
        1.0, ge=MIN_METRICS_INTERVAL_S, le=60.0, description="Sampling period of /metrics.")
    request_timeout_s: float = Field(
        600.0, ge=1.0, le=7200.0, description="Longest time one streamed request may take.")

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        # a launched engine runs on the experiment's GPUs (the ones its meters, pools and
        # locks cover): llem sets their selection, a campaign cannot
        checked_env(v)
        gpus = next(filter(None, map(gpu_env_problem, v)), None)
        if gpus:
            raise ValueError(gpus)
        owned = sorted(k for k in v if k.upper() in cls.owned_env)
        if owned:
            raise ValueError(f"{owned[0]} is set by llem (the engine's GPUs from gpus, "
                             "offline mode for a local model, the engine's address)")
        return v


class InterpreterSettings(LaunchedSettings):
    """A launched engine started as ``<python> -m <module>`` from its own environment."""

    python: str | None = Field(
        None, description="Interpreter of the engine's environment (the engine pins its own "
        "libraries); default: the experiment's own. A relative path is relative to the "
        "campaign file; the local runner needs it in LLEM_ALLOWED_PYTHONS.")

    @field_validator("python")
    @classmethod
    def _python_is_literal(cls, v: str | None) -> str | None:
        placeholder_problem("python", v)
        return v


def launched_field(name: str, **changes: Any) -> Any:
    """The shared field ``name`` of :class:`LaunchedSettings` (type rules, bounds) with
    another default or description: each field is declared once, each engine picks its
    defaults (``startup_timeout_s: float = launched_field("startup_timeout_s",
    default=1800.0)``)."""
    base = LaunchedSettings.model_fields[name]
    kwargs: dict[str, Any] = {"description": base.description}
    if base.default_factory is not None:
        kwargs["default_factory"] = base.default_factory
    else:
        kwargs["default"] = base.default
    field: FieldInfo = Field(**{**kwargs, **changes})
    # the bounds not changed stay the shared field's
    changed = {type(m) for m in field.metadata}
    field.metadata = [m for m in base.metadata if type(m) not in changed] + field.metadata
    return field


def parallel_field(flag: str) -> Any:
    """The GPUs an engine splits the model over (checked against ``gpus``)."""
    return Field(1, ge=1, le=256, description=f"{flag}; must equal the number of gpus.")


def context_field(flag: str) -> Any:
    """The longest sequence an engine holds (checked against the experiment's tokens)."""
    return Field(None, ge=16, le=10_485_760, description=f"{flag}; default: the model's.")


def shared_values(settings: LaunchedSettings) -> dict[str, Any]:
    """The shared fields' values of an engine's section (for its :class:`Served`)."""
    return {k: getattr(settings, k) for k in LaunchedSettings.model_fields}


class ServerSettings(LaunchedSettings):
    """``backend: server``: an OpenAI-compatible server, launched by llem (``command``) or
    already running (``url``)."""

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
    health_path: str = Field("/health", description="GET path answering 200 once ready.")
    model_name: str | None = Field(
        None, description="The 'model' field of requests; default: the experiment's model.")
    fixed_length: Literal["ignore_eos", "generation_config", "none"] = Field(
        "ignore_eos",
        description="How exactly max_output_tokens are asked for: ignore_eos+min_tokens "
        "(vLLM, SGLang), a generation_config JSON (transformers serve), or not at all.")
    metrics_path: str | None = Field(
        "/metrics", description="Prometheus path sampled during the load; null: none.")

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


class LoadSettings(Strict):
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
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the arrival schedule.")
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
