"""The engine registry: every inference engine llem can measure, one module each.

An engine module declares everything about its engine in one place (:mod:`.base`): its
``backend:`` name and typed settings section, whether it runs in-process or as a served
engine, its conflict rules, how it launches (argv, environment, health, metrics, version
for provenance), its warm-reuse key and which of its fields are programs under the
deployment's allow-lists. The config models, validation, trust, the grid and the runner
look engines up here instead of comparing backend strings.

Adding an engine: its module (a subclass of one of :mod:`.base`'s engines, ``ENGINE =
...``), one line in :data:`ENGINE_MODULES`, its tests, and its environment or image.
"""

from __future__ import annotations

import importlib
from functools import cache

from llem_core.runtime.engines.base import Engine, InProcessEngine, LaunchedEngine, ServedEngine

# One line per engine: the module under llem_core/runtime/engines/ that declares it (its order is
# the order engines are listed in).
ENGINE_MODULES = (
    "pytorch",
    "server",
    "vllm",
    "llamacpp",
    "trtllm",
    "sglang",
)

__all__ = ["ENGINE_MODULES", "Engine", "InProcessEngine", "LaunchedEngine", "ServedEngine",
           "engine_for", "engines", "names", "sections"]


@cache
def engines() -> dict[str, Engine]:
    """Every registered engine by its ``backend:`` name."""
    out: dict[str, Engine] = {}
    for module in ENGINE_MODULES:
        engine = importlib.import_module(f"llem_core.runtime.engines.{module}").ENGINE
        if engine.name in out:
            raise RuntimeError(f"engine {engine.name!r} is registered twice")
        out[engine.name] = engine
    return out


def names() -> tuple[str, ...]:
    return tuple(engines())


def engine_for(backend: str) -> Engine:
    """The engine of a ``backend:`` value (validated configurations only name known ones)."""
    try:
        return engines()[str(backend)]
    except KeyError:
        raise ValueError(f"backend {backend!r} is not an engine llem knows (engines: "
                         f"{', '.join(names())})") from None


def sections() -> dict[str, Engine]:
    """The settings sections of an experiment (``vllm``, ``server``, ...) by name."""
    return {e.section: e for e in engines().values() if e.section is not None}
