"""From the client's records and the meter's marks to the result's numbers.

Latency follows ``vllm bench serve``: an event is a chunk with choices; TTFT is submission
to the first event, ITL the gaps between consecutive events, E2E submission to the last
event, and TPOT ``(E2E - TTFT) / (completion_tokens - 1)`` with the engine's usage count.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from llem_core.analysis.results import Metrics, PerRequest
from llem_core.runtime.energy.base import Baseline, EnergyMeter
from llem_core.runtime.latency import Distribution, RequestTimeline, compute
from llem_core.runtime.serving.attribution import Attribution, snap, window_attribution
from llem_core.runtime.serving.client import RequestRecord
from llem_core.runtime.serving.metrics import EnergySpan, ServedRequest, SteadyState
from llem_core.runtime.serving.window import SteadyWindow


def tokens(r: RequestRecord) -> int:
    """Output tokens of a request: the engine's count, else the tokens received."""
    return r.usage_completion_tokens if r.usage_completion_tokens is not None \
        else len(r.token_times)


def tokens_between(records: Sequence[RequestRecord], a: float, b: float) -> int:
    return sum(bisect.bisect_right(r.token_times, b) - bisect.bisect_right(r.token_times, a)
               for r in records)


def tpot(r: RequestRecord) -> float | None:
    n = tokens(r)
    if not r.event_times or n <= 1:
        return None
    return (r.event_times[-1] - r.event_times[0]) / (n - 1)


def load_metrics(records: Sequence[RequestRecord], load_s: float, warmup: int) -> Metrics:
    """The experiment's Metrics over the whole load."""
    lat = compute([RequestTimeline(r.submitted, r.event_times) for r in records])
    out = sum(tokens(r) for r in records)
    return Metrics(
        requests=len(records), input_tokens=sum(r.usage_prompt_tokens or 0 for r in records),
        output_tokens=out, repetitions=1, window_s=load_s,
        output_tokens_per_s=out / load_s, requests_per_s=len(records) / load_s,
        ttft_s=lat.ttft_s, tpot_s=Distribution.of([t for r in records if (t := tpot(r))
                                                   is not None]),
        itl_s=lat.itl_s, e2e_s=lat.e2e_s, peak_memory_bytes=None,
        peak_memory_source="not measured (the engine is another process)",
        warmup_runs=warmup,
        per_request=PerRequest(output_tokens=[tokens(r) for r in records],
                               itl_count=lat.itl_counts, ttft_s=lat.ttft_each,
                               e2e_s=lat.e2e_each))


def span(meter: EnergyMeter, marks: Sequence[tuple[float, Any]], i0: int, i1: int,
         records: Sequence[RequestRecord], t0: float, idle: Baseline | None,
         loaded: Baseline | None) -> tuple[EnergySpan, Any]:
    """Energy between marks i0 and i1, adjusted against both baselines; and the reading."""
    (a, m0), (b, m1) = marks[i0], marks[i1]
    reading = meter.reading(m0, m1)
    n = tokens_between(records, a, b)
    s = EnergySpan(start_s=a - t0, end_s=b - t0, seconds=b - a, tokens=n, raw_j=reading.joules,
                   note=reading.note)
    if reading.joules is not None:
        if idle is not None:
            s.adjusted_idle_j = reading.joules - idle.watts * (b - a)
        if loaded is not None:
            s.adjusted_loaded_j = reading.joules - loaded.watts * (b - a)
        if n:
            s.raw_j_per_token = reading.joules / n
            s.adjusted_idle_j_per_token = _per(s.adjusted_idle_j, n)
            s.adjusted_loaded_j_per_token = _per(s.adjusted_loaded_j, n)
    return s, reading


def _per(v: float | None, n: int) -> float | None:
    return None if v is None else v / n


def steady_state(w: SteadyWindow, meter: EnergyMeter, marks: Sequence[tuple[float, Any]],
                 records: Sequence[RequestRecord], t0: float, idle: Baseline | None,
                 loaded: Baseline | None) -> tuple[SteadyState, Any, Attribution | None]:
    """The window's record, its energy reading (None if none) and the attribution."""
    st = SteadyState(
        start_s=None if w.start is None else w.start - t0,
        end_s=None if w.end is None else w.end - t0, seconds=w.seconds,
        target_occupancy=w.target, target_source=w.target_source,
        occupancy_mean=w.occupancy_mean, occupancy_min=w.occupancy_min,
        occupancy_max=w.occupancy_max, fill_fraction=w.fill_fraction, flags=list(w.flags))
    if w.start is None or w.end is None:
        st.energy.note = "no steady-state window"
        return st, None, None
    edges = snap(marks, w.start, w.end)
    if edges is None:
        st.flags.append("the steady-state window holds fewer than two meter marks: "
                        "no window energy (lower load.energy_interval_s or lengthen the load)")
        st.energy.note = "window shorter than the meter's mark interval"
        return st, None, None
    st.energy, reading = span(meter, marks, *edges, records, t0, idle, loaded)
    att = window_attribution(meter, marks, *edges, records) \
        if reading.joules is not None else "window energy unmeasured"
    if isinstance(att, str):
        st.flags.append(f"no per-request energy: {att}")
        return st, reading, None
    total = att.total_j
    if reading.joules and abs(total - reading.joules) > 1e-9 * abs(reading.joules):
        st.flags.append(f"interval energies sum to {total:.6g} J but the window reads "
                        f"{reading.joules:.6g} J (the meter is not additive over intervals)")
    st.unattributed_j = att.unattributed_j
    st.attribution_intervals = att.intervals
    return st, reading, att


def served(records: Sequence[RequestRecord], t0: float, att: Attribution | None,
           window: tuple[float, float] | None) -> list[ServedRequest]:
    out = []
    for i, r in enumerate(records):
        ttft = (r.event_times[0] - r.submitted) if r.event_times else None
        out.append(ServedRequest(
            index=r.index, prompt_tokens=r.usage_prompt_tokens,
            completion_tokens=r.usage_completion_tokens, events=len(r.event_times),
            content_events=len(r.content_times), tokens_received=len(r.token_times),
            finish_reason=r.finish_reason,
            scheduled_s=None if r.scheduled is None else r.scheduled - t0,
            submitted_s=r.submitted - t0,
            first_token_s=None if r.first_token is None else r.first_token - t0,
            done_s=None if r.done is None else r.done - t0, ttft_s=ttft, tpot_s=tpot(r),
            e2e_s=(r.event_times[-1] - r.submitted) if r.event_times else None,
            window_tokens=tokens_between([r], *window) if window else 0,
            window_energy_j=att.per_request_j[i] if att is not None else None))
    return out
