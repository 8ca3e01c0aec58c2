"""Synthetic result documents for tests that need valid result files without a model."""

from __future__ import annotations

from llem_core.analysis.results import EnergyResult, ExperimentResult, Metrics, Provenance
from llem_core.campaign.config import ExperimentConfig
from llem_core.runtime.latency import Distribution


def synthetic_result(campaign: str, run_id: str, name: str, config: ExperimentConfig,
                     config_hash: str, cycle: int, tokens_per_s: float = 100.0,
                     j_per_token: float | None = None, torch: str = "2.13.0",
                     driver: str = "580.1", started_at: str = "2026-01-01T00:00:00"
                     ) -> ExperimentResult:
    d = Distribution.of([0.01, 0.012, 0.011])
    m = Metrics(requests=2, input_tokens=32, output_tokens=8, repetitions=1, window_s=1.0,
                output_tokens_per_s=tokens_per_s, requests_per_s=2.0, ttft_s=d, tpot_s=d,
                itl_s=d, e2e_s=d, peak_memory_bytes=None, peak_memory_source="none",
                warmup_runs=0)
    energy = EnergyResult(source="none") if j_per_token is None else EnergyResult(
        source="nvml_counter", raw_j=j_per_token * 8 + 5, baseline_w=5.0,
        adjusted_j=j_per_token * 8, raw_j_per_output_token=(j_per_token * 8 + 5) / 8,
        adjusted_j_per_output_token=j_per_token, window_s=1.0)
    p = Provenance(llem_version="0", host="h", platform="p", python="3",
                   libraries={"torch": torch}, device="cuda:0",
                   hardware={"driver": driver, "gpus": [{"name": "H100", "uuid": "GPU-1"}]},
                   started_at=started_at, finished_at=started_at)
    return ExperimentResult(campaign=campaign, run_id=run_id, name=name, config_hash=config_hash,
                            cycle=cycle, position=0, config=config, metrics=m, energy=energy,
                            provenance=p)
