"""The folder where llem keeps what it can recompute (grid summaries, idle baselines)."""

from __future__ import annotations

import os
from pathlib import Path

from llem_core import env_names

CACHE_ENV = env_names.CACHE_DIR


def cache_root() -> Path:
    """``$LLEM_CACHE_DIR``, else ``~/.cache/llem``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llem")
