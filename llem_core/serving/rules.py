"""Rules relating the fields of a ``backend: server`` experiment (filtered in a grid)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llem_core.config import ExperimentConfig


def serving_conflicts(cfg: ExperimentConfig) -> list[str]:
    """Reasons a configuration with (or needing) server/load sections cannot run."""
    if cfg.backend != "server":
        extra = [k for k in ("server", "load") if getattr(cfg, k) is not None]
        return [f"{k} is set but backend is {cfg.backend} (it applies to backend server)"
                for k in extra]
    out = []
    server, load = cfg.server, cfg.load
    if server is None:
        out.append("backend server needs a server section (server.command or server.url)")
    elif (server.command is None) == (server.url is None):
        out.append("server needs exactly one of server.command and server.url")
    if load is None:
        out.append("backend server needs a load section (load.pattern ...)")
        return out
    if load.pattern == "concurrency" and load.concurrency is None:
        out.append("load.pattern concurrency needs load.concurrency")
    if load.pattern != "concurrency" and load.concurrency is not None:
        out.append(f"load.concurrency is set but load.pattern is {load.pattern}")
    if load.pattern == "rate" and load.rate is None:
        out.append("load.pattern rate needs load.rate")
    if load.pattern != "rate" and load.rate is not None:
        out.append(f"load.rate is set but load.pattern is {load.pattern}")
    if load.arrival == "poisson" and load.burstiness != 1.0:
        out.append(f"load.burstiness {load.burstiness:g} needs load.arrival gamma "
                   "(Poisson arrivals have burstiness 1)")
    return out
