"""What the results pages show, read from the results store (never from Airflow's DB).

Campaigns come from the campaign files in ``$LLEM_CAMPAIGNS_DIR``; a run's counts and
headline table come from its ``aggregate.json`` (and ``plan.json`` when present). Every
file may be missing, half written by hand, or hostile (any experiment container can
write the results folder): everything is read through :mod:`llem_core.analysis.untrusted_files`
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

from llem_core.analysis import metrics as metric_registry
from llem_core.analysis import untrusted_files as untrusted
from llem_core.analysis.results import run_dir
from llem_core.campaign.discovery import CAMPAIGNS_ENV, iter_campaigns

# (key in aggregate.json's table rows, column title): the registry's labels
PAGE_METRICS = ("tokens_per_s", "j_per_token_raw", "j_per_token_adjusted", "ttft_p50_s",
                "itl_p50_s")
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
    n: int | None = None
    publishable: bool = False
    estimator: str = ""
    note: str | None = None


@dataclass
class Row:
    config: str
    n: int | None
    cells: dict[str, Cell]
    publishable: bool = False


@dataclass
class ChangePoint:
    """One change point the run brought (change_points.json), as text and numbers."""

    config: str
    metric: str
    run_id: str
    level_before: float | None
    level_after: float | None
    rel_change: float | None
    rel_low: float | None
    rel_high: float | None
    p_value: float | None
    causes: list[str]


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
    run_id: str | None = None  # the Airflow run id, as plan.json says (untrusted text)
    confidence: float = 0.95
    energy_missing: dict[str, str] = field(default_factory=dict)
    change_points: list[ChangePoint] = field(default_factory=list)
    change_points_searched: bool = False


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
            method, estimator, note = (m.get("ci_method", m.get("method")), m.get("estimator"),
                                       m.get("note"))
            cells[key] = Cell(_number(m.get("mean")), _number(m.get("ci_low")),
                              _number(m.get("ci_high")), _text(method), _count(m.get("n")),
                              m.get("publishable") is True, _text(estimator),
                              _text(note) or None)
    n = _count(raw.get("n"))
    publishable = raw.get("publishable")
    return Row(name, n, cells, publishable is True if isinstance(publishable, bool)
               else (n or 0) >= 3)


def _text(v: Any, limit: int = 2000) -> str:
    return v[:limit] if isinstance(v, str) else ""


def _change_point(raw: Any) -> ChangePoint | None:
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str)
                                            for k in ("config_name", "metric", "run_id")):
        return None
    causes = [f"{_text(c.get('field'), 80)} {_text(c.get('before'), 120)} -> "
              f"{_text(c.get('after'), 120)} ({_text(c.get('where'), 40)})"
              for c in raw.get("likely_causes") or [] if isinstance(c, dict)]
    return ChangePoint(_text(raw["config_name"], 300), _text(raw["metric"], 80),
                       _text(raw["run_id"], 300), _number(raw.get("level_before")),
                       _number(raw.get("level_after")), _number(raw.get("rel_change")),
                       _number(raw.get("rel_change_ci_low")),
                       _number(raw.get("rel_change_ci_high")), _number(raw.get("p_value")),
                       causes[:10])


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
    confidence = _number(digest.get("confidence"))
    s.confidence = confidence if confidence is not None and 0 < confidence < 1 else 0.95
    run_ids = digest.get("run_ids")
    if s.run_id is None and isinstance(run_ids, list) and len(run_ids) == 1 \
            and isinstance(run_ids[0], str):
        s.run_id = _text(run_ids[0], 300)
    missing_energy = digest.get("energy_missing")
    if isinstance(missing_energy, dict):
        s.energy_missing = {_text(k, 300): _text(v, 300) for k, v in missing_energy.items()
                            if isinstance(k, str)}
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
        if isinstance(plan, dict) and isinstance(plan.get("run_id"), str):
            s.run_id = _text(plan["run_id"], 300)
        if s.planned is None:
            s.problems.append("plan.json: no list of runs in it")
    planned_by_plan = s.planned
    digest, problem = _read_json(folder, "aggregate.json", untrusted.MAX_SUMMARY_BYTES)
    if problem:
        s.problems.append(problem)
    elif digest is not None:
        _apply_digest(s, digest)
    found, problem = _read_json(folder, "change_points.json", untrusted.MAX_SUMMARY_BYTES)
    if problem:
        s.problems.append(problem)
    elif isinstance(found, dict):
        s.change_points_searched = True
        new = found.get("new")
        cps = [_change_point(c) for c in new] if isinstance(new, list) else []
        s.change_points = [c for c in cps if c is not None]
    if None not in (planned_by_plan, s.planned) and planned_by_plan != s.planned:
        s.problems.append(f"plan.json lists {planned_by_plan} runs, aggregate.json "
                          f"{s.planned}")
