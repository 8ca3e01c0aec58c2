"""The ``serving`` section of a result: the load, its steady-state window and energy.

Times are seconds since the load's first request was sent. Energies are joules: raw, and
adjusted against each baseline (idle before the engine started; engine loaded with no
request); None where unmeasured, with the reason in ``flags`` or a ``*_note`` field.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ServedRequest(BaseModel):
    index: int
    prompt_tokens: int | None = Field(description="The engine's usage count.")
    completion_tokens: int | None = Field(description="The engine's usage count.")
    events: int = Field(description="Chunks with choices (vllm bench serve's unit).")
    content_events: int = Field(description="Chunks that carried text.")
    tokens_received: int = Field(
        0, description="Tokens the chunks carried: their token ids where the engine sent them "
        "(server.token_ids), else one per content event.")
    finish_reason: str | None
    scheduled_s: float | None = Field(
        None, description="When the arrival schedule asked for it (burst and rate loads).")
    submitted_s: float
    first_token_s: float | None
    done_s: float | None
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float | None
    window_tokens: int = Field(0, description="Tokens received inside the energy window.")
    window_energy_j: float | None = Field(
        None, description="This request's share of the window's raw energy.")


class EnergySpan(BaseModel):
    """Energy of one span of the load."""

    start_s: float | None = None
    end_s: float | None = None
    seconds: float = 0.0
    tokens: int = Field(0, description="Content events received inside the span.")
    raw_j: float | None = None
    adjusted_idle_j: float | None = None
    adjusted_loaded_j: float | None = None
    raw_j_per_token: float | None = None
    adjusted_idle_j_per_token: float | None = None
    adjusted_loaded_j_per_token: float | None = None
    note: str | None = None


class SteadyState(BaseModel):
    """The steady-state window: as defined by the requests, and as measured by the meter."""

    start_s: float | None
    end_s: float | None
    seconds: float
    target_occupancy: int
    target_source: str = Field(description="load.target_occupancy | server.max_num_seqs | "
                               "estimated (time-weighted median over the load)")
    occupancy_mean: float | None = None
    occupancy_min: int | None = None
    occupancy_max: int | None = None
    fill_fraction: float | None = None
    energy: EnergySpan = Field(default_factory=EnergySpan,
                               description="Over the meter marks inside the window.")
    unattributed_j: float | None = None
    attribution_intervals: int = 0
    flags: list[str] = Field(default_factory=list)


class ServingMetrics(BaseModel):
    url: str
    launched: bool = Field(description="llem started the server (server.command).")
    server_log: str | None = None
    engine: str | None = Field(None, description="The engine llem launched (vllm), if any.")
    engine_version: str | None = Field(
        None, description="What the engine's GET /version answered (vLLM), if anything.")
    command: list[str] | None = Field(None, description="argv of the launched server.")
    engine_reused: bool = Field(
        False, description="isolation warm: the engine was started by an earlier experiment "
        "and kept running (startup_s is then null; server_log is that experiment's).")
    startup_s: float | None = None
    pattern: str
    num_requests: int
    load_s: float
    idle_baseline_w: float | None = None
    idle_baseline_note: str | None = None
    loaded_baseline_w: float | None = None
    loaded_baseline_note: str | None = None
    whole_load: EnergySpan
    steady_state: SteadyState
    fixed_output_requested: bool
    fixed_output_honoured: bool | None = Field(
        None, description="Every usage count equalled max_output_tokens; None if asked for "
        "no fixed length or usage was missing.")
    token_mismatches: int = Field(
        0, description="Requests whose usage count differs from their content events.")
    usage_missing: int = 0
    engine_gauges: dict[str, float | None] | None = None
    engine_gauges_note: str | None = None
    requests: list[ServedRequest] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)


def table_columns(s: ServingMetrics | None) -> dict[str, object]:
    """The serving figures of a result's tidy row (empty for other backends)."""
    if s is None:
        return {}
    st = s.steady_state
    return {
        "serving_pattern": s.pattern, "serving_requests": s.num_requests,
        "serving_load_s": s.load_s, "steady_window_s": st.seconds,
        "steady_energy_window_s": st.energy.seconds,
        "steady_target_occupancy": st.target_occupancy,
        "steady_occupancy_mean": st.occupancy_mean, "steady_fill_fraction": st.fill_fraction,
        "idle_baseline_w": s.idle_baseline_w, "loaded_baseline_w": s.loaded_baseline_w,
        "j_per_token_adjusted_loaded": st.energy.adjusted_loaded_j_per_token,
        "whole_load_j_per_token_raw": s.whole_load.raw_j_per_token,
        "serving_flags": "; ".join(s.flags) or None,
    }
