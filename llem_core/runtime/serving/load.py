"""Arrival schedules of a load: when each request is sent, relative to the load's start.

- burst: every request at t = 0.
- rate: inter-arrival gaps drawn from a gamma law of shape ``burstiness`` and mean ``1/rate``
  (shape 1 is the exponential law, i.e. Poisson arrivals), as ``vllm bench serve`` does; the
  first request goes at t = 0. Seeded: the same settings give the same schedule.
- concurrency: a closed loop (a request is sent when one of N finishes), so there is no
  schedule: :func:`arrival_offsets` returns None.
"""

from __future__ import annotations

import numpy as np

from llem_core.runtime.engines.settings import LoadSettings


def arrival_offsets(load: LoadSettings, count: int) -> list[float] | None:
    """Seconds after the load's start at which each of ``count`` requests is sent."""
    if load.pattern == "concurrency":
        return None
    if load.pattern == "burst":
        return [0.0] * count
    if load.rate is None:
        raise ValueError("load.pattern rate needs load.rate")
    shape = 1.0 if load.arrival == "poisson" else load.burstiness
    rng = np.random.default_rng(load.seed)
    gaps = rng.gamma(shape, 1.0 / (load.rate * shape), size=max(count - 1, 0))
    return [0.0, *np.cumsum(gaps).tolist()][:count]
