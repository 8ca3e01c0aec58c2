"""One Airflow pool with one slot per GPU (and one per host for CPU runs).

Every experiment task of every campaign that uses a GPU takes that GPU's pool, so two
campaigns triggered together queue up instead of sharing a GPU. The pools count deferred
tasks, so an experiment resting through its config gap keeps its GPU.

Airflow 3 forbids database access while parsing DAGs, so pools are created by a command,
idempotently: ``llem-airflow pools`` (the main job and the compose init service run it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from llem_core.config import CampaignConfig


def pool_name(host: str, gpu: int | None) -> str:
    return f"llem_{host}_cpu" if gpu is None else f"llem_{host}_gpu{gpu}"


def pool_for(cfg: CampaignConfig) -> str:
    """The pool of a campaign: its runner's host and the first GPU its experiments use."""
    if cfg.base.get("device") == "cpu":
        return pool_name(cfg.runner.host, None)
    gpus = cfg.base.get("gpus") or [0]
    return pool_name(cfg.runner.host, int(gpus[0]))


def pools_of(folder: Path) -> dict[str, str]:
    from llem_core.campaign_file import CampaignFileError, load_campaign

    out: dict[str, str] = {}
    for path in sorted(folder.glob("*.y*ml")):
        try:
            cfg = load_campaign(path).config
        except CampaignFileError:
            continue
        out.setdefault(pool_for(cfg), f"llem: one experiment at a time ({cfg.runner.host})")
    return out


def ensure_pools(folder: Path, airflow: str = "airflow") -> list[str]:
    """Create (or keep) every campaign's pool with one slot; returns their names."""
    names = []
    for name, desc in pools_of(folder).items():
        subprocess.run([airflow, "pools", "set", name, "1", desc, "--include-deferred"],
                       check=True, capture_output=True, text=True)
        names.append(name)
    return names
