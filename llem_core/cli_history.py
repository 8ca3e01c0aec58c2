"""`llem history RESULTS_DIR/CAMPAIGN`: every configuration's numbers across runs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llem_core.analysis.metrics import REGISTRY, headline, short_label

# pandas and scipy (via llem_core.analysis.history) are imported by the command itself: this module
# is imported by every `llem` invocation, `run-experiment` included, which must not pay ~1 s
# for them.
HISTORY_METRICS = headline()

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fmt(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _records(df: Any) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))


def change_line(c: dict[str, Any]) -> str:
    """One change point as a sentence: where, how much, how sure, likely cause."""
    from llem_core.analysis.regression import change_size

    size = change_size(c.get("rel_change"), c.get("rel_change_ci_low"),
                       c.get("rel_change_ci_high"))
    causes = [x for x in c.get("likely_causes") or [] if x.get("where") == "at the change"]
    cause = "; likely cause: " + ", ".join(
        f"{x['field']} {x['before']} -> {x['after']}" for x in causes) if causes else ""
    return (f"{c['config_name']} {c['metric']}: {_fmt(c['level_before'])} -> "
            f"{_fmt(c['level_after'])} {c.get('unit') or ''} ({size}) from run "
            f"{c['run_id']} on (p = {c['p_value']:.2g}, {c['runs_before']} runs before, "
            f"{c['runs_after']} after){cause}")


def cmd_history(args: argparse.Namespace) -> int:
    from llem_core.analysis.history import history
    from llem_core.analysis.history_report import write_history

    root = Path(args.campaign_dir)
    if not root.is_dir():
        err.print(f"error: {root}: no such folder", markup=False, highlight=False)
        return 1
    metrics = tuple(args.metric) if args.metric else HISTORY_METRICS
    unknown = [m for m in metrics if m not in REGISTRY]
    if unknown:
        err.print(f"error: --metric: unknown {', '.join(unknown)} (known: "
                  f"{', '.join(REGISTRY)})", markup=False, highlight=False)
        return 1
    try:
        h = history(root, metrics, baseline=args.baseline, confidence=args.confidence)
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return 1
    if h.runs.empty:
        err.print(f"error: no result files under {root}", markup=False, highlight=False)
        return 1
    out_dir = Path(args.out) if args.out else root / "history"
    if not args.out and out_dir.is_symlink():  # inside a folder every experiment can write
        err.print(f"error: {out_dir} is a symbolic link: not written through; give --out",
                  markup=False, highlight=False)
        return 1
    files = write_history(h, out_dir, f"History of {root.name}")
    if args.json:
        print(json.dumps({"runs": _records(h.runs), "points": _records(h.points),
                          "changes": _records(h.changes), "flags": _records(h.flags),
                          "change_points": _records(h.change_points),
                          "problems": [p.model_dump() for p in h.problems], "files": files},
                         indent=2))
        return 0
    t = Table(title=escape(f"{root}: {len(h.runs)} runs, estimates with {args.confidence:.0%} "
                           "interval (log-t where the metric cannot be negative)"))
    for col in ("configuration", "metric", *[str(o) for o in h.runs["order"]]):
        t.add_column(col)
    # A series is a config hash: a name reused for other settings gets its own rows.
    hashes = h.points.groupby("config_name")["config_hash"].nunique() if len(h.points) else {}
    for (name, chash, metric), g in h.points.groupby(["config_name", "config_hash", "metric"],
                                                     sort=True):
        name = name if hashes[name] == 1 else f"{name}@{str(chash)[:8]}"
        by_order = {int(r["order"]): r for r in g.to_dict("records")}
        cells = [f"{_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] n={r['n']}"
                 if (r := by_order.get(int(o))) else "missing" for o in h.runs["order"]]
        t.add_row(escape(str(name)), escape(short_label(str(metric))), *cells)
    out.print(t)
    for c in h.changes.to_dict("records"):
        out.print(f"changed between {c['run_before']} and {c['run_after']}: {c['field']} "
                  f"{c['before']} -> {c['after']}", markup=False, highlight=False)
    for c in h.change_points.to_dict("records"):
        out.print("[bold yellow]change point[/]: " + escape(change_line(c)), highlight=False)
    if h.change_points.empty:
        out.print(f"no change point in any series ({len(h.runs)} runs)", highlight=False)
    for p in h.problems:
        out.print(f"unreadable: {p.path}: {p.reason}", markup=False, highlight=False)
    out.print(f"wrote {', '.join(files.values())}", markup=False, highlight=False)
    return 0


def add_parser(sub: Any) -> None:
    h = sub.add_parser("history", help="every configuration's numbers across a campaign's runs")
    h.add_argument("campaign_dir", help="<results_dir>/<campaign>")
    h.add_argument("--metric", action="append", help=f"repeatable (default: {HISTORY_METRICS})")
    h.add_argument("--baseline", help="run id to compare the latest run with (default: the "
                   "previous run)")
    h.add_argument("--confidence", type=float, default=0.95)
    h.add_argument("--out", help="folder for the tables and chart (default: CAMPAIGN_DIR/history)")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_history)
