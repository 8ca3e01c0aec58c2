"""Serving engines kept running between consecutive experiments (``isolation: warm``).

An engine is reused only by the next experiment whose launch is identical: the same argv
(model, engine settings, dtype, seed, ...) and the same environment, apart from vLLM's
compile-cache folder, which moves with the engine. A reused engine is checked healthy
first; its idle baseline before start-up belongs to the experiment that started it, so the
reusing one reports none, and says why.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from llem_core.serving.config import ServerSettings
from llem_core.serving.process import ServerProcess


@dataclass
class KeptEngine:
    proc: ServerProcess
    url: str
    command: list[str]
    log: str
    engine_version: str | None
    cache_root: str | None


def engine_key(server: ServerSettings) -> tuple[Any, ...]:
    env = tuple(sorted((k, v) for k, v in server.env.items() if k != "VLLM_CACHE_ROOT"))
    return (tuple(server.command or ()), env, server.port)


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
