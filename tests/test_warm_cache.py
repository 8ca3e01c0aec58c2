"""isolation warm in-process: what WarmCache keeps, reuses and releases around runner.run
(the tiny model on the CPU; the host that drives it is tested in test_host.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llem_core.analysis.results import RunSpec
from llem_core.campaign.config import ExperimentConfig, HealthCheck
from llem_core.campaign.grid import config_hash
from llem_core.runtime.backends import pytorch
from llem_core.runtime.backends.base import BackendError
from llem_core.runtime.experiment.errors import ExperimentError
from llem_core.runtime.measure import run
from llem_core.runtime.supervisor.warm import WarmCache


def spec(model: Path, **over: object) -> RunSpec:
    base = {"model": str(model), "dtype": "float32", "device": "cpu", "max_input_tokens": 16,
            "max_output_tokens": 3, "min_output_tokens": 3, "warmup_runs": 1,
            "prompts": {"count": 2, "length": 16},
            "energy": {"meter": "none", "min_window_s": 0}}
    cfg = ExperimentConfig(**{**base, **over})
    return RunSpec(name="x", config_hash=config_hash(cfg), config=cfg)


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = pytorch.PytorchBackend.close

    def close(self: pytorch.PytorchBackend) -> None:
        calls.append(id(self))
        original(self)

    monkeypatch.setattr(pytorch.PytorchBackend, "close", close)
    return calls


def test_without_a_cache_the_model_is_released(tiny_model: Path, closes: list[int]) -> None:
    r = run(spec(tiny_model))
    assert len(closes) == 1 and not r.provenance.model_already_loaded


def test_reuse_then_a_failure_releases_and_reports_the_real_reason(
        tiny_model: Path, closes: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    warm = WarmCache()
    first = run(spec(tiny_model), warm=warm)
    second = run(spec(tiny_model, batch_size=2, seed=5), warm=warm)
    assert closes == [] and warm.backend is not None  # kept, never closed
    assert not first.provenance.model_already_loaded
    assert second.provenance.model_already_loaded and second.provenance.timings_s["load"] == 0
    m = second.metrics
    assert second.config.batch_size == 2 and m.output_tokens == 3 * m.requests > 0

    def boom(self: pytorch.PytorchBackend, batch: object) -> None:
        raise BackendError("out of memory at batch_size 2: simulated")

    monkeypatch.setattr(pytorch.PytorchBackend, "generate", boom)
    with pytest.raises(ExperimentError, match="out of memory at batch_size 2: simulated"):
        run(spec(tiny_model, batch_size=2), warm=warm)
    assert warm.backend is None and len(closes) == 1  # a failed model is not kept


def test_another_model_setting_loads_afresh(tiny_model: Path, closes: list[int]) -> None:
    warm = WarmCache()
    run(spec(tiny_model), warm=warm)
    other = run(spec(tiny_model, dtype="bfloat16"), warm=warm)
    assert not other.provenance.model_already_loaded and len(closes) == 1


def test_a_readiness_check_before_the_experiment_releases_what_is_kept(
        tiny_model: Path, closes: list[int]) -> None:
    warm = WarmCache()
    run(spec(tiny_model), warm=warm)
    checked = spec(tiny_model).model_copy(update={"health_check": HealthCheck()})
    r = run(checked, warm=warm)
    assert not r.provenance.model_already_loaded and len(closes) == 1
