"""Latency metrics as vLLM's benchmark defines them, computed from token timelines.

For static batched generation a request's *submission* is the start of its batch: all
requests of a batch are submitted together, so TTFT includes the batch's prefill.

- TTFT: submission -> first generated token.
- TPOT: (end-to-end latency - TTFT) / (output tokens - 1), for requests with > 1 token.
- ITL: every gap between consecutive tokens of a request, pooled over all requests.
- E2E: submission -> last generated token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel


class Distribution(BaseModel):
    """Summary of a latency sample, in seconds.

    ``std`` is the sample standard deviation (n - 1); ``std_population`` divides by n, as
    ``vllm bench serve`` (numpy's default) does: compare that one with vLLM's figures.
    """

    n: int
    mean: float | None
    median: float | None
    std: float | None
    std_population: float | None = None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        import numpy as np  # here, not at import: the results model is read at DAG parse

        a = np.asarray(values, dtype=float)
        if a.size == 0:
            return cls(n=0, mean=None, median=None, std=None, std_population=None, p50=None,
                       p90=None, p95=None, p99=None, min=None, max=None)
        p50, p90, p95, p99 = (float(x) for x in np.percentile(a, [50, 90, 95, 99]))
        return cls(n=int(a.size), mean=float(a.mean()), median=p50,
                   std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
                   std_population=float(a.std(ddof=0)), p50=p50, p90=p90, p95=p95,
                   p99=p99, min=float(a.min()), max=float(a.max()))


@dataclass
class RequestTimeline:
    """When a request was submitted and when each of its output tokens appeared."""

    submitted: float
    token_times: list[float]


class LatencyReport(BaseModel):
    ttft_s: Distribution
    tpot_s: Distribution
    itl_s: Distribution
    e2e_s: Distribution
    itl_counts: list[int]
    ttft_each: list[float | None]
    e2e_each: list[float | None]


def compute(requests: Sequence[RequestTimeline]) -> LatencyReport:
    import numpy as np

    ttft, tpot, itl, e2e, counts = [], [], [], [], []
    ttft_each: list[float | None] = []
    e2e_each: list[float | None] = []
    for r in requests:
        if not r.token_times:
            counts.append(0)
            ttft_each.append(None)
            e2e_each.append(None)
            continue
        times = np.asarray(r.token_times, dtype=float)
        if np.any(np.diff(times) < 0) or times[0] < r.submitted:
            raise ValueError("token times must not decrease nor precede submission")
        first = times[0] - r.submitted
        last = times[-1] - r.submitted
        ttft.append(first)
        e2e.append(last)
        ttft_each.append(first)
        e2e_each.append(last)
        gaps = np.diff(times)
        itl.extend(gaps.tolist())
        counts.append(int(gaps.size))
        if times.size > 1:
            tpot.append((last - first) / (times.size - 1))
    return LatencyReport(ttft_s=Distribution.of(ttft), tpot_s=Distribution.of(tpot),
                         itl_s=Distribution.of(itl), e2e_s=Distribution.of(e2e),
                         itl_counts=counts, ttft_each=ttft_each, e2e_each=e2e_each)
