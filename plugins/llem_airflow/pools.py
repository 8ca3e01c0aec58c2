"""One Airflow pool with one slot per GPU (and one per host for CPU runs).

Every experiment task takes the pool of its placement (:mod:`llem_core.campaign.placement`): the
pool of the lowest *host* GPU it uses, so two campaigns triggered together queue up
instead of sharing a GPU; an experiment on several GPUs also locks each of them while
it runs. The pools count deferred tasks, so an experiment resting through its config
gap keeps its GPU.

Airflow 3 forbids database access while parsing DAGs, so pools are created by a command,
idempotently: ``llem-airflow pools`` (the main job and the compose init service run it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from llem_airflow.grid_cache import grid_summary
from llem_core.campaign.discovery import iter_campaigns
from llem_core.campaign.loading import CampaignFileError


def pools_of(folder: Path) -> tuple[dict[str, str], list[str]]:
    """Pool name -> description for every valid campaign, and the problems found."""
    campaigns, file_errors = iter_campaigns(folder)
    errors = [line for exc in file_errors for line in exc.lines()]
    out: dict[str, str] = {}
    for c in campaigns:
        try:
            placement = grid_summary(c).placement
        except CampaignFileError as exc:
            errors.extend(exc.lines())
            continue
        for name in placement.pools:
            out.setdefault(name, f"llem: one experiment at a time ({placement.host})")
    return out, errors


def ensure_pools(names: dict[str, str], airflow: str = "airflow") -> list[str]:
    """Create (or keep) each pool with one slot; returns their names."""
    for name, desc in names.items():
        subprocess.run([airflow, "pools", "set", name, "1", desc, "--include-deferred"],
                       check=True, capture_output=True, text=True)
    return list(names)
