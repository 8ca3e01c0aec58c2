"""Checks shared by the tests of real serving engines: a simulated meter with a known power
trace, and the identities every measured load must satisfy."""

from __future__ import annotations

import math
import time

import pytest

from llem_core.analysis.results import ExperimentResult
from llem_core.runtime.energy.base import EnergyReading
from llem_core.runtime.engines import engine_for


class LinearPowerMeter:
    """Simulated meter: P(t) = 50 + 20 t watts, t in seconds since it opened."""

    source = "simulated"

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def hardware(self) -> dict[str, object]:
        return {"meter": "simulated"}

    def mark(self) -> float:
        return time.monotonic() - self.t0

    def reading(self, a: float, b: float) -> EnergyReading:
        return EnergyReading(source=self.source, joules=50 * (b - a) + 10 * (b * b - a * a),
                             window_s=b - a)

    def close(self) -> None:
        pass



def check_load(r: ExperimentResult, meter: LinearPowerMeter, out_tokens: int,
               requests: int = 8, gauges: bool = False) -> None:
    """What every load must satisfy, whatever its pattern."""
    s = r.serving
    assert s is not None and s.num_requests == requests
    token_ids = engine_for(r.config.backend).server(r.config).token_ids
    for q in s.requests:
        assert q.completion_tokens == out_tokens
        if token_ids:  # the engine names every token it streams
            assert q.tokens_received == out_tokens
        else:
            # One token per text-bearing event: a token that decodes to no text (a special
            # token or a partial UTF-8 byte of the random model) streams none, so a count
            # can fall short, never exceed; a shortfall must be flagged, not hidden.
            assert 0 < q.tokens_received <= out_tokens
        assert 0 < q.content_events <= q.tokens_received
        assert q.ttft_s is not None and q.e2e_s is not None and 0 < q.ttft_s <= q.e2e_s
        assert q.submitted_s <= q.first_token_s <= q.done_s <= s.load_s
    short = sum(q.tokens_received != q.completion_tokens for q in s.requests)
    assert s.fixed_output_honoured is True and s.token_mismatches == short
    assert (short > 0) == any("differ from the tokens received" in f for f in s.flags)
    assert r.metrics.output_tokens == requests * out_tokens and r.metrics.ttft_s.n == requests
    st = s.steady_state
    assert st.start_s is not None and st.end_s is not None
    assert 0 <= st.start_s < st.end_s <= s.load_s  # the window lies inside the load
    e = st.energy
    assert e.start_s >= st.start_s and e.end_s <= st.end_s and e.tokens > 0
    # mean power of the known trace over a span of the meter's life
    assert 50 < e.raw_j / e.seconds < 50 + 20 * (time.monotonic() - meter.t0)
    parts = [q.window_energy_j for q in s.requests]
    assert all(p is not None and p >= 0 for p in parts)
    assert math.fsum(parts) + st.unattributed_j == pytest.approx(e.raw_j, rel=1e-12)
    assert sum(q.window_tokens for q in s.requests) == e.tokens
    assert e.raw_j_per_token == pytest.approx(e.raw_j / e.tokens)
    assert r.energy.raw_j == e.raw_j  # the headline energy is the steady state's
    if gauges:  # sampled inside the window from the engine's /metrics
        assert s.engine_gauges is not None and s.engine_gauges_note is None
    else:
        assert s.engine_gauges is None and "HTTP 404" in s.engine_gauges_note
