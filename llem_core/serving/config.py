"""The ``server:`` and ``load:`` sections of an experiment (``backend: server``).

Imports only pydantic: :mod:`llem_core.config` imports this module. Every field is
addressable as a grid axis (``load.rate``, ``server.max_num_seqs``, ...). Rules that relate
two fields (``pattern: rate`` needs ``rate``) live in :func:`llem_core.grid.conflicts`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerSettings(_Strict):
    """An OpenAI-compatible server: launched by llem (``command``) or already running (``url``)."""

    command: list[str] | None = Field(
        None, min_length=1,
        description="argv of the server, started without a shell in its own process group; "
        "'{port}' and '{model}' inside an argument are replaced by the port and the model.")
    url: str | None = Field(
        None, description="Base URL of a server already running (e.g. http://127.0.0.1:8000); "
        "its idle power before it started cannot be measured.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Port for a launched server; default: a free one.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of a launched server.")
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
