"""What ``isolation: warm`` keeps between consecutive experiments: the loaded model.

Two consecutive configurations share a model when everything that shapes the loaded
weights and where they live is equal (the engine's warm key: backend, model, dtype, device,
GPUs); batch size,
decoding, token counts, prompts and seed may differ. Between experiments the allocator's
cache is emptied and its peak statistics reset, and torch is re-seeded; a result whose
model was reused says so (``provenance.hardware.model.already_loaded``) and records a
load time of 0 with the original load's time beside it.
"""

from __future__ import annotations

import gc
from typing import Any

from llem_core.campaign.config import ExperimentConfig
from llem_core.runtime.backends.base import InferenceBackend
from llem_core.runtime.engines import InProcessEngine, engine_for


def model_key(cfg: ExperimentConfig) -> tuple[Any, ...]:
    """The engine's warm-reuse key (:meth:`llem_core.runtime.engines.InProcessEngine.warm_key`)."""
    engine = engine_for(cfg.backend)
    assert isinstance(engine, InProcessEngine), cfg.backend
    return engine.warm_key(cfg)


class WarmCache:
    """At most one loaded backend, reused by the next experiment with the same model key."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.backend: InferenceBackend | None = None
        self.load_info: dict[str, Any] = {}
        self.reuses = 0
        self._engines: Any = None

    def engines(self) -> Any:
        """The serving-engine cache (imported on first use: it needs httpx)."""
        if self._engines is None:
            from llem_core.runtime.serving.engines import EngineCache

            self._engines = EngineCache()
        return self._engines

    def release_engines(self) -> None:
        if self._engines is not None:
            self._engines.release()

    def take(self, cfg: ExperimentConfig) -> InferenceBackend | None:
        """The kept backend, reconfigured for ``cfg``, if its model matches; else None (and
        a kept backend of another model is released first)."""
        if self.backend is None:
            return None
        if model_key(cfg) != self.key:
            self.release()
            return None
        backend = self.backend
        backend.config = cfg  # type: ignore[attr-defined]
        _clear_caches(backend)
        _seed(cfg.seed)
        self.reuses += 1
        return backend

    def keep(self, cfg: ExperimentConfig, backend: InferenceBackend,
             load_info: dict[str, Any]) -> None:
        if self.backend is not None and self.backend is not backend:
            self.release()
        self.key, self.backend, self.load_info = model_key(cfg), backend, dict(load_info)

    def release(self) -> None:
        backend, self.backend, self.key = self.backend, None, None
        if backend is not None:
            backend.close()
        gc.collect()


def _clear_caches(backend: InferenceBackend) -> None:
    gc.collect()
    if backend.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    backend.reset_peak_memory()


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
