"""Cache of a campaign's expanded grid, keyed by the file's content.

The DAG file is parsed again and again (dag-processor loop, every worker task); the grid
is expanded once per version of the campaign file, so parse time stays flat as the grid
grows: a parse reads the cached names and placement instead of expanding 10,000
combinations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from pydantic import BaseModel

from llem_core import __version__
from llem_core.analysis.results import write_atomic
from llem_core.cache import cache_root
from llem_core.campaign.discovery import Campaign
from llem_core.campaign.grid import NoValidConfigError, expand_or_raise
from llem_core.campaign.loading import CampaignFileError, FieldError
from llem_core.campaign.placement import Placement, PlacementError, campaign_placement


class GridSummary(BaseModel):
    """What the DAG needs of a campaign's grid at parse time."""

    names: list[str]
    generated: int
    filtered: int
    warnings: list[str]
    placement: Placement


def cache_dir() -> Path:
    return cache_root() / "grids"


def _summarise(campaign: Campaign) -> GridSummary:
    cfg = campaign.loaded.config
    report = expand_or_raise(cfg)
    placement = campaign_placement(cfg.runner, [(s.name, s.config) for s in report.specs])
    return GridSummary(names=[s.name for s in report.specs], generated=report.generated,
                       filtered=len(report.filtered), warnings=report.warnings,
                       placement=placement)


def _valid(cached: object) -> dict | None:
    """A cache entry as written below, or None."""
    if isinstance(cached, dict):
        error = cached.get("error")
        if isinstance(error, list) and len(error) == 2 and all(isinstance(e, str) for e in error):
            return cached
        if "summary" in cached:
            GridSummary.model_validate(cached["summary"])  # ValueError when it is not one
            return cached
    return None


def grid_summary(campaign: Campaign) -> GridSummary:
    """Names, counts and placement of the valid configurations; CampaignFileError if none."""
    key = hashlib.sha256(
        f"{__version__}\0{campaign.path.resolve()}\0{campaign.text}".encode()).hexdigest()
    path = cache_dir() / f"{key[:32]}.json"
    try:
        cached = _valid(json.loads(path.read_text()))
    except (OSError, ValueError):
        cached = None  # missing, or not what this code writes: expand again
    if cached is None:
        try:
            cached = {"summary": _summarise(campaign).model_dump(mode="json")}
        except NoValidConfigError as exc:
            cached = {"error": [exc.field, str(exc)]}
        except PlacementError as exc:
            cached = {"error": ["runner.gpus", str(exc)]}
        # A read-only home still parses, only slower.
        with contextlib.suppress(OSError):
            write_atomic(path, json.dumps(cached))
    if cached.get("error"):
        field, reason = cached["error"]
        raise CampaignFileError(str(campaign.path), [FieldError(field, reason)])
    return GridSummary.model_validate(cached["summary"])
