"""Serving engines kept running between consecutive experiments (``isolation: warm``).

Which engine may be kept, and for which launch, is the engine's to say
(:meth:`llem_core.runtime.engines.base.ServedEngine.keep_key`: today only a vLLM engine with its
prefix cache off; an engine whose caches would favour the next experiment is started afresh
in every mode). A kept engine is reused only by the next experiment with the same key,
after a health check. Its idle baseline, measured before it started, is carried over with
its age.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from llem_core.runtime.energy.base import Baseline
from llem_core.runtime.serving.process import ServerProcess


@dataclass
class KeptEngine:
    proc: ServerProcess
    url: str
    command: list[str]
    log: str
    engine_version: str | None
    cache_root: str | None
    idle: Baseline | None = None
    idle_at: float = field(default_factory=time.monotonic)


class EngineCache:
    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.engine: KeptEngine | None = None

    def take(self, key: tuple[Any, ...]) -> KeptEngine | None:
        """The running engine for ``key``, or None (another or a dead one is stopped)."""
        if self.engine is None:
            return None
        if key != self.key or self.engine.proc.proc.poll() is not None:
            self.release()
            return None
        return self.engine

    def keep(self, key: tuple[Any, ...], engine: KeptEngine) -> None:
        if self.engine is not None and self.engine is not engine:
            self.release()
        self.key, self.engine = key, engine

    def holds(self, cache_root: str | None) -> bool:
        return self.engine is not None and cache_root is not None \
            and self.engine.cache_root == cache_root

    def release(self) -> None:
        engine, self.engine, self.key = self.engine, None, None
        if engine is not None:
            engine.proc.stop()
            if engine.cache_root:
                shutil.rmtree(engine.cache_root, ignore_errors=True)
