"""Aggregate one campaign run: result files -> tidy table, CI table, summary files.

Compared against the plan, so a run that failed or never ran is listed by name and
cycle, never silently absent from the statistics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from llem_core.results import load_results, to_frame, write_atomic
from llem_core.stats import CIOptions, summarise

HEADLINE = ("tokens_per_s", "j_per_token_adjusted", "j_per_token_raw", "energy_adjusted_j",
            "ttft_p50_s", "itl_p50_s")


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def compact_table(ci: pd.DataFrame, key: str = "config_name") -> list[dict[str, Any]]:
    """Per configuration: n and mean [low, high] of the headline metrics (small for XCom)."""
    rows: dict[str, dict[str, Any]] = {}
    for r in ci.to_dict("records"):
        if r["metric"] not in HEADLINE:
            continue
        name = str(r[key])
        row = rows.setdefault(name, {key: name, "n": 0})
        row["n"] = max(row["n"], int(r["n"]))
        row[r["metric"]] = {"mean": _num(r["mean"]), "ci_low": _num(r["ci_low"]),
                            "ci_high": _num(r["ci_high"]), "method": r["ci_method"]}
    return list(rows.values())


def _markdown(ci: pd.DataFrame, missing: list[dict[str, Any]], notes: list[str],
              confidence: float, key: str) -> str:
    lines = ["# Campaign run summary", ""]
    if missing:
        lines += ["## Failed or missing runs", ""]
        lines += [f"- {m['name']} (cycle {m['cycle']}, {m['config_hash']}): {m['reason']}"
                  for m in missing]
        lines.append("")
    lines += [f"## Per-configuration means with {confidence:.0%} bootstrap CI", "",
              "| configuration | metric | n | mean | CI low | CI high | method | note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in ci.to_dict("records"):
        lines.append(f"| {r[key]} | {r['metric']} | {r['n']} | {_fmt(r['mean'])} | "
                     f"{_fmt(r['ci_low'])} | {_fmt(r['ci_high'])} | {r['ci_method']} | "
                     f"{r['note'] or ''} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    x = _num(v)
    return "—" if x is None else f"{x:.4g}"


def aggregate_dir(run_dir: str | Path, planned: list[dict[str, Any]] | None = None,
                  opts: CIOptions | None = None, group_by: list[str] | None = None,
                  notes: list[str] | None = None) -> dict[str, Any]:
    """Write results.parquet, summary.csv, summary.md under ``run_dir``; return the digest."""
    opts = opts or CIOptions()
    run_dir = Path(run_dir)
    results, problems = load_results(run_dir)
    df = to_frame(results)
    if not df.empty:
        df = df.sort_values(["position", "cycle"], na_position="last", kind="stable")
    notes = list(notes or [])
    notes += [f"unreadable result {p.path}: {p.reason}" for p in problems]
    missing: list[dict[str, Any]] = []
    if planned is not None:
        have = {(r.config_hash, r.cycle) for _, r in results}
        for p in planned:
            if (p["config_hash"], p["cycle"]) not in have:
                missing.append({"name": p["name"], "config_hash": p["config_hash"],
                                "cycle": p["cycle"],
                                "reason": p.get("reason", "no result (failed or did not run)")})
    if not df.empty:
        no_energy = sorted(set(df.loc[df["energy_source"] == "none", "config_name"]))
        if no_energy:
            notes.append("no energy meter for: " + ", ".join(no_energy)
                         + " (energy fields are empty, not zero)")
    cols = [g if g in df.columns or g.startswith("config.") else f"config.{g}"
            for g in (group_by or ["config_name"])]
    ci = summarise(df, group_by=cols, opts=opts)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not df.empty:
        df.to_parquet(run_dir / "results.parquet", index=False)
    write_atomic(run_dir / "summary.csv", ci.to_csv(index=False))
    key = cols[0]
    write_atomic(run_dir / "summary.md", _markdown(ci, missing, notes, opts.confidence, key))
    digest = {
        "run_dir": str(run_dir),
        "results": len(results),
        "planned": len(planned) if planned is not None else None,
        "missing": missing,
        "problems": [p.model_dump() for p in problems],
        "notes": notes,
        "table": compact_table(ci, key) if not ci.empty else [],
        "files": {"parquet": str(run_dir / "results.parquet") if not df.empty else None,
                  "csv": str(run_dir / "summary.csv"), "markdown": str(run_dir / "summary.md")},
    }
    write_atomic(run_dir / "aggregate.json", json.dumps(digest, indent=2, default=str))
    return digest
