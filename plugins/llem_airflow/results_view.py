"""What the results pages show, read from the results store (never from Airflow's DB).

Campaigns come from the campaign files in ``$LLEM_CAMPAIGNS_DIR``; a run's counts and
headline table come from its ``aggregate.json`` (and ``plan.json`` when present). Every
file may be missing, half written by hand, or hostile (any experiment container can
write the results folder): everything is read through :mod:`llem_core.untrusted_files`
from the campaign's ``results_dir`` (no link below it followed, regular files only,
size-capped, never a read that can block), and readers return a problem string instead
of raising.
"""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llem_core import metrics as metric_registry
from llem_core import untrusted_files as untrusted
from llem_core.discovery import CAMPAIGNS_ENV, iter_campaigns
from llem_core.results import run_dir

# (key in aggregate.json's table rows, column title): the registry's labels
PAGE_METRICS = ("tokens_per_s", "j_per_token_adjusted", "ttft_p50_s", "itl_p50_s")
HEADLINE: tuple[tuple[str, str], ...] = tuple((m, metric_registry.label(m)) for m in PAGE_METRICS)


@dataclass(frozen=True)
class Campaign:
    name: str
    dag_id: str
    results_dir: Path

    @property
    def root(self) -> Path:
        """<results_dir>/<campaign>: every run folder of the campaign is inside."""
        return run_dir(self.results_dir, self.name, "_").parent

    def run_folder(self, run_id: str) -> Path:
        return run_dir(self.results_dir, self.name, run_id)

    def open(self, path: Path | None = None) -> untrusted.Folder:
        """A folder of this campaign (default: its root) as untrusted input: only
        ``results_dir`` is followed as the OS resolves it."""
        return untrusted.open_folder(path if path is not None else self.root, self.results_dir)


@dataclass
class Cell:
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    method: str = ""


@dataclass
class Row:
    config: str
    n: int | None
    cells: dict[str, Cell]


@dataclass
class RunSummary:
    """One run folder as the pages show it."""

    path: Path
    result_files: int = 0
    aggregated: bool = False
    planned: int | None = None
    measured: int | None = None
    failed: int | None = None
    missing: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # the summary files that may be served


def campaigns(folder: str | None = None) -> list[Campaign]:
    """The valid campaign files of ``folder`` (default ``$LLEM_CAMPAIGNS_DIR``)."""
    folder = folder if folder is not None else os.environ.get(CAMPAIGNS_ENV)
    if not folder:
        return []
    found, _ = iter_campaigns(Path(folder))  # the DAG import errors already report the rest
    return [Campaign(c.name, c.loaded.config.dag_id, Path(c.loaded.config.results_dir))
            for c in found]


def run_folders(c: Campaign) -> list[Path]:
    """Run folders of a campaign (real folders, never links), newest first."""
    try:
        with c.open() as root:
            found, _ = untrusted.subfolders(root)
    except (OSError, ValueError):  # no run yet, or the campaign folder is not a folder
        return []
    return [c.root / name for name, _ in sorted(found, key=lambda t: t[1], reverse=True)]


def _read_json(folder: untrusted.Folder, name: str, limit: int) -> tuple[Any, str | None]:
    try:
        return untrusted.read_json(folder, name, limit), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{name}: unreadable ({exc})"


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _row(raw: Any) -> Row | None:
    if not isinstance(raw, dict):
        return None
    name = raw.get("config_name")
    if not isinstance(name, str):  # grouped by another column: the first text value
        name = next((v for k, v in raw.items() if k != "n" and isinstance(v, str)), None)
    if name is None:
        return None
    cells = {}
    for key, _ in HEADLINE:
        m = raw.get(key)
        if isinstance(m, dict):
            method = m.get("ci_method", m.get("method"))
            cells[key] = Cell(_number(m.get("mean")), _number(m.get("ci_low")),
                              _number(m.get("ci_high")), method if isinstance(method, str) else "")
    return Row(name, _count(raw.get("n")), cells)


def _planned_from_plan(plan: Any) -> int | None:
    if isinstance(plan, list):
        return len(plan)
    if isinstance(plan, dict):
        for key in ("runs", "planned"):
            v = plan.get(key)
            if isinstance(v, list):
                return len(v)
            if _count(v) is not None:
                return _count(v)
    return None


def _apply_digest(s: RunSummary, digest: Any) -> None:
    if not isinstance(digest, dict):
        s.problems.append("aggregate.json: not a JSON object")
        return
    s.aggregated = True
    s.measured = _count(digest.get("results"))
    if _count(digest.get("planned")) is not None:  # what the aggregation compared with
        s.planned = _count(digest.get("planned"))
    missing = digest.get("missing")
    if isinstance(missing, list):
        s.failed = len(missing)
        for m in missing:
            m = m if isinstance(m, dict) else {}
            s.missing.append(f"{m.get('name', '?')} (cycle {m.get('cycle', '?')}): "
                             f"{m.get('reason', 'no result')}")
    else:
        s.problems.append("aggregate.json: 'missing' is not a list")
    for p in digest.get("problems") or []:
        if isinstance(p, dict):
            s.problems.append(f"unreadable result {p.get('path', '?')}: {p.get('reason', '?')}")
    s.notes = [str(n) for n in digest.get("notes") or [] if isinstance(n, str | int | float)]
    table = digest.get("table")
    if not isinstance(table, list):
        s.problems.append("aggregate.json: 'table' is not a list")
        return
    rows = [_row(r) for r in table]
    s.rows = [r for r in rows if r is not None]
    if len(s.rows) != len(rows):
        s.problems.append(f"aggregate.json: {len(rows) - len(s.rows)} table row(s) unreadable")


SERVED_FILES = ("aggregate.json", "summary.csv", "summary.md", "results.parquet")


def read_summary(folder: Path, trusted: Path | None = None) -> RunSummary:
    """Counts, headline table and problems of one run folder; never raises on bad files.

    ``trusted``: the folder above whose links are followed (the campaign's results_dir;
    default: ``folder`` itself).
    """
    s = RunSummary(path=folder)
    try:
        handle = untrusted.open_folder(folder, trusted)
    except (OSError, ValueError) as exc:
        s.problems.append(f"cannot open the run folder: {exc}")
        return s
    with handle:
        _read_folder(s, handle)
    return s


def _read_folder(s: RunSummary, folder: untrusted.Folder) -> None:
    found, refused = untrusted.walk(folder, lambda n: fnmatch.fnmatchcase(n, "cycle_*.json"),
                                    max_depth=1)
    s.result_files = sum(1 for rel in found if rel.count("/") == 1)
    s.problems += [f"{rel}: {why}" for rel, why in refused if "not searched" not in why]
    s.files = untrusted.regular_files(folder, SERVED_FILES)
    plan, problem = _read_json(folder, "plan.json", untrusted.MAX_PLAN_BYTES)
    if problem:
        s.problems.append(problem)
    elif plan is not None:
        s.planned = _planned_from_plan(plan)
        if s.planned is None:
            s.problems.append("plan.json: no list of runs in it")
    planned_by_plan = s.planned
    digest, problem = _read_json(folder, "aggregate.json", untrusted.MAX_SUMMARY_BYTES)
    if problem:
        s.problems.append(problem)
    elif digest is not None:
        _apply_digest(s, digest)
    if None not in (planned_by_plan, s.planned) and planned_by_plan != s.planned:
        s.problems.append(f"plan.json lists {planned_by_plan} runs, aggregate.json "
                          f"{s.planned}")
