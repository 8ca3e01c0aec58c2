"""Synthetic result documents for tests that need a valid result file without a model."""

from __future__ import annotations

from llem_core.config import ExperimentConfig
from llem_core.latency import Distribution
from llem_core.results import EnergyResult, ExperimentResult, Metrics, Provenance


def synthetic_result(campaign: str, run_id: str, name: str, config: ExperimentConfig,
                     config_hash: str, cycle: int, tokens_per_s: float = 100.0
                     ) -> ExperimentResult:
    d = Distribution.of([0.01, 0.012, 0.011])
    m = Metrics(requests=2, input_tokens=32, output_tokens=8, repetitions=1, window_s=1.0,
                output_tokens_per_s=tokens_per_s, requests_per_s=2.0, ttft_s=d, tpot_s=d,
                itl_s=d, e2e_s=d, peak_memory_bytes=None, peak_memory_source="none",
                warmup_runs=0)
    p = Provenance(llem_version="0", host="h", platform="p", python="3", libraries={},
                   device="cpu", hardware={}, started_at="2026-01-01T00:00:00",
                   finished_at="2026-01-01T00:00:01")
    return ExperimentResult(campaign=campaign, run_id=run_id, name=name, config_hash=config_hash,
                            cycle=cycle, position=0, config=config, metrics=m,
                            energy=EnergyResult(source="none"), provenance=p)
