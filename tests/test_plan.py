"""Plans: every config exactly `cycles` times, in the order each ordering claims."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import ExperimentSpec, config_hash
from llem_core.campaign.ordering import build, stages


def specs(n: int) -> list[ExperimentSpec]:
    out = []
    for i in range(n):
        cfg = ExperimentConfig(model="m", seed=i)
        out.append(ExperimentSpec(name=f"c{i}", config_hash=config_hash(cfg), config=cfg))
    return out


configs = st.integers(min_value=1, max_value=12)
cycles = st.integers(min_value=1, max_value=8)
seeds = st.integers(min_value=0, max_value=2**31)


@settings(max_examples=60, deadline=None)
@given(configs, cycles, st.sampled_from(["interleaved", "shuffled", "grouped"]), seeds)
def test_every_config_exactly_cycles_times(n, c, ordering, seed):
    runs = build(specs(n), c, ordering, seed)
    assert len(runs) == n * c
    assert [r.position for r in runs] == list(range(n * c))
    counts = Counter(r.spec.name for r in runs)
    assert set(counts.values()) == {c}
    assert len({(r.spec.name, r.cycle) for r in runs}) == n * c


@settings(max_examples=40, deadline=None)
@given(configs, cycles)
def test_interleaved_same_order_each_cycle(n, c):
    runs = build(specs(n), c, "interleaved")
    for k in range(c):
        block = runs[k * n:(k + 1) * n]
        assert {r.cycle for r in block} == {k + 1}
        assert [r.spec.name for r in block] == [f"c{i}" for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(configs, cycles, seeds)
def test_shuffled_is_seeded_permutation_per_cycle(n, c, seed):
    a = build(specs(n), c, "shuffled", seed)
    b = build(specs(n), c, "shuffled", seed)
    assert [r.spec.name for r in a] == [r.spec.name for r in b]
    for k in range(c):
        block = a[k * n:(k + 1) * n]
        assert {r.cycle for r in block} == {k + 1}
        assert sorted(r.spec.name for r in block) == sorted(f"c{i}" for i in range(n))


def test_shuffled_differs_between_cycles_and_seeds():
    a = [r.spec.name for r in build(specs(8), 4, "shuffled", 1)]
    assert len({tuple(a[k * 8:(k + 1) * 8]) for k in range(4)}) > 1
    b = [r.spec.name for r in build(specs(8), 4, "shuffled", 2)]
    assert a != b


@settings(max_examples=40, deadline=None)
@given(configs, cycles)
def test_grouped_runs_all_cycles_of_one_config_first(n, c):
    runs = build(specs(n), c, "grouped")
    for i in range(n):
        block = runs[i * c:(i + 1) * c]
        assert {r.spec.name for r in block} == {f"c{i}"}
        assert [r.cycle for r in block] == list(range(1, c + 1))


def test_stages_split_cycles():
    runs = build(specs(3), 2, "interleaved")
    st_ = stages(runs, 3)
    assert [[r.cycle for r in s] for s in st_] == [[1, 1, 1], [2, 2, 2]]

