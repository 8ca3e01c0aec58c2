"""The rules relating an experiment's fields to its engine (filtered in a grid): each
engine's own (:meth:`~llem_core.runtime.engines.base.Engine.conflicts`), and the sections that
apply to another engine than the experiment's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llem_core.runtime.engines import engine_for, engines, sections

if TYPE_CHECKING:
    from llem_core.campaign.config import ExperimentConfig


def _served_names() -> list[str]:
    return [name for name, e in engines().items() if e.served]


def engine_conflicts(cfg: ExperimentConfig) -> list[str]:
    """Reasons a configuration cannot run on its engine, though each field is valid."""
    engine = engine_for(cfg.backend)
    applies = {"load": _served_names(), **{s: [e.name] for s, e in sections().items()}}
    out = [f"{k} is set but backend is {cfg.backend} (it applies to backend "
           f"{' or '.join(b)})" for k, b in applies.items()
           if getattr(cfg, k) is not None and cfg.backend not in b]
    return out + engine.conflicts(cfg)


def timeout_conflicts(cfg: ExperimentConfig, timeout_s: float) -> list[str]:
    """What the experiment certainly spends, against its task's timeout: a configuration
    that cannot end within it would be killed every time, after its engine and baselines."""
    return engine_for(cfg.backend).timeout_conflicts(cfg, timeout_s)
