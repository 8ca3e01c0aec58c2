"""Order the runs of a campaign: each config x each cycle, interleaved, shuffled or grouped.

Cycles are numbered from 1; positions (the global execution order) from 0.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel

from llem_core.campaign.config import Ordering
from llem_core.campaign.grid import ExperimentSpec


class ExperimentRun(BaseModel):
    """One planned execution of one configuration."""

    spec: ExperimentSpec
    cycle: int
    position: int


def build(
    specs: Sequence[ExperimentSpec], cycles: int, ordering: Ordering | str, seed: int = 0
) -> list[ExperimentRun]:
    """The ordered runs. The same inputs always give the same plan."""
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    ordering = Ordering(ordering)
    order: list[tuple[ExperimentSpec, int]] = []
    if ordering is Ordering.grouped:
        order = [(s, c) for s in specs for c in range(1, cycles + 1)]
    elif ordering is Ordering.interleaved:
        order = [(s, c) for c in range(1, cycles + 1) for s in specs]
    else:
        rng = random.Random(seed)
        for c in range(1, cycles + 1):
            perm = list(specs)
            rng.shuffle(perm)
            order.extend((s, c) for s in perm)
    return [ExperimentRun(spec=s, cycle=c, position=i) for i, (s, c) in enumerate(order)]


def stages(runs: Sequence[ExperimentRun], size: int) -> list[list[ExperimentRun]]:
    """Split the ordered plan into consecutive slices of ``size`` runs.

    With ``size`` = number of configurations, stage k of an interleaved or shuffled plan is
    exactly cycle k; of a grouped plan it is the k-th slice of the same order. Readiness
    checks run between stages, so the GPU rests between cycles in every ordering.
    """
    if size < 1:
        raise ValueError("stage size must be >= 1")
    return [list(runs[i:i + size]) for i in range(0, len(runs), size)]
