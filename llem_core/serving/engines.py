"""Serving engines kept running between consecutive experiments (``isolation: warm``).

Only a vLLM engine with its prefix cache off (``--no-enable-prefix-caching`` in
``vllm.extra_args``) is kept: with the cache on, the next experiment's prompts would hit
what the previous one left (the same builtin prompts), and an arbitrary ``backend: server``
engine's caches are unknown; those engines are started afresh in every mode. A kept engine
is reused only by the next experiment whose launch is identical (argv with the model,
engine settings, dtype, seed; environment apart from the compile-cache folder, which moves
with the engine; GPUs), after a health check. Its idle baseline, measured before it
started, is carried over with its age.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from llem_core.config import ExperimentConfig
from llem_core.energy.base import Baseline
from llem_core.serving.config import ServerSettings
from llem_core.serving.process import ServerProcess, render_argv

NO_PREFIX_CACHE = "--no-enable-prefix-caching"


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


def keepable(cfg: ExperimentConfig) -> bool:
    return cfg.backend == "vllm" and cfg.vllm is not None \
        and NO_PREFIX_CACHE in cfg.vllm.extra_args


def engine_key(cfg: ExperimentConfig, server: ServerSettings) -> tuple[Any, ...]:
    env = tuple(sorted((k, v) for k, v in server.env.items() if k != "VLLM_CACHE_ROOT"))
    argv = tuple(render_argv(server.command or (), 0, cfg.model))
    return (argv, env, server.port, cfg.model, tuple(cfg.gpus))


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
