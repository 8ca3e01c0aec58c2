"""Cache of a campaign's expanded grid, keyed by the file's content.

The DAG file is parsed again and again (dag-processor loop, every worker task); the grid
is expanded once per version of the campaign file, so parse time stays flat as the grid
grows: a parse reads the cached names instead of expanding 10,000 combinations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llem_core import __version__
from llem_core.campaign_file import CampaignFileError, FieldError, LoadedCampaign
from llem_core.grid import NoValidConfigError, expand_or_raise
from llem_core.results import write_atomic


def cache_dir() -> Path:
    base = os.environ.get("LLEM_CACHE_DIR") or Path.home() / ".cache" / "llem"
    return Path(base) / "grids"


def grid_summary(loaded: LoadedCampaign, text: str) -> dict[str, Any]:
    """Names and counts of the valid configurations; raises CampaignFileError if none."""
    key = hashlib.sha256(f"{__version__}\0{loaded.path.resolve()}\0{text}".encode()).hexdigest()
    path = cache_dir() / f"{key[:32]}.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    if cached is None:
        try:
            report = expand_or_raise(loaded.config)
            cached = {"names": [s.name for s in report.specs], "generated": report.generated,
                      "filtered": len(report.filtered), "warnings": report.warnings,
                      "error": None}
        except NoValidConfigError as exc:
            cached = {"error": str(exc)}
        # A read-only home still parses, only slower.
        with contextlib.suppress(OSError):
            write_atomic(path, json.dumps(cached))
    if cached.get("error"):
        raise CampaignFileError(str(loaded.path), [FieldError("grid", cached["error"])])
    return cached
