"""How large a grid may be: the DAG processor expands every campaign within its import
timeout, so the size is checked from the axis lengths before anything is expanded."""

from __future__ import annotations

import math
import os
from typing import Any

from llem_core import env_names
from llem_core.campaign.errors import FieldError
from llem_core.campaign.yaml_safe import count_values

MAX_GRID_SIZE_ENV = env_names.MAX_GRID_SIZE
DEFAULT_MAX_GRID_SIZE = 10_000
# Values per combination allowed on average (a default config has about 40).
VALUES_PER_CONFIG = 200


class GridLimitMisconfigured(ValueError):
    """$LLEM_MAX_GRID_SIZE is set to something other than a positive integer."""


def max_grid_size() -> int:
    """Most combinations (grid points + explicit experiments) a campaign may have:
    $LLEM_MAX_GRID_SIZE, else 10,000. Set to anything but a positive integer (digits,
    spaces around allowed) it raises :class:`GridLimitMisconfigured`: a deployment's typo
    is said, never read as the default."""
    raw = os.environ.get(MAX_GRID_SIZE_ENV, "")
    if raw == "":
        return DEFAULT_MAX_GRID_SIZE
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and int(text) > 0):
        raise GridLimitMisconfigured(
            f"the deployment's {MAX_GRID_SIZE_ENV}={raw[:40]!r} is not a positive integer: "
            "no campaign is expanded until it is fixed (or unset, for 10000)")
    return int(text)


def combination_count(grid: dict[str, list[Any]], experiments: list[Any]) -> int:
    """Combinations expand() builds, from the axis lengths alone (nothing is expanded)."""
    points = math.prod(len(v) for v in grid.values()) if grid or not experiments else 0
    return points + len(experiments)


def expansion_work(base: dict[str, Any], grid: dict[str, list[Any]],
                   experiments: list[Any]) -> int:
    """Values expand() copies, validates and hashes in all: combinations x their size (a
    large ``extra`` in base is copied into every combination)."""
    count = combination_count(grid, experiments)
    per_point = count_values(base) + sum(max((count_values(v) for v in values), default=0)
                                         for values in grid.values())
    points = count - len(experiments)
    return points * per_point + sum(count_values(base) + count_values(e) for e in experiments)


def max_expansion_work() -> int:
    return max_grid_size() * VALUES_PER_CONFIG


def grid_size_error(base: dict[str, Any], grid: dict[str, list[Any]],
                    experiments: list[Any]) -> FieldError | None:
    """Why expanding this grid would take too long (checked from sizes alone), or None."""
    count = combination_count(grid, experiments)
    try:
        limit = max_grid_size()
    except GridLimitMisconfigured as exc:
        return FieldError("grid", str(exc))
    if count > limit:
        axes = " x ".join(f"{len(v)} {k}" for k, v in grid.items()) or "no axes"
        return FieldError("grid", (
            f"{count} combinations ({axes}, + {len(experiments)} experiments) exceed the "
            f"limit of {limit} (set {MAX_GRID_SIZE_ENV} to raise it, or split the campaign)"))
    work, work_limit = expansion_work(base, grid, experiments), max_expansion_work()
    if work > work_limit:
        return FieldError("grid", (
            f"{count} combinations of this size hold {work} values in all, more than "
            f"{work_limit} ({VALUES_PER_CONFIG} per allowed combination): make base (its "
            "extra?) or the grid smaller"))
    return None
