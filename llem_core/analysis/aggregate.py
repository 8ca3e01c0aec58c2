"""Aggregate one campaign run (or a folder of runs): result files -> tables and summaries.

Compared against the plan (given, or read from ``plan.json`` files in the folder), so a
run that failed or never ran is listed by name and cycle, never silently absent from the
statistics. Every interval carries its n, method and notes into every output.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llem_core.analysis import metrics as registry
from llem_core.analysis import untrusted_files as untrusted
from llem_core.analysis.results import ExperimentResult, load_results, to_frame, write_atomic
from llem_core.analysis.stats import MIN_PUBLISHABLE, CIOptions, compare, summarise
from llem_core.analysis.summary_md import markdown

HEADLINE = registry.headline()
PLAN_FILE = "plan.json"


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _plain(v: Any) -> Any:
    """A JSON-friendly scalar (numpy scalars -> Python, NaN -> None)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # NaN, or an overflow: JSON has no such number
    return v


def _keys_of(ci: pd.DataFrame, key: str | list[str] | None) -> list[str]:
    if key is None:
        key = "config_label" if "config_label" in ci else "config_name"
    keys = [key] if isinstance(key, str) else list(key)
    extra = [c for c in ("config_name", "campaign", "config_hash")
             if keys == ["config_label"] and c in ci]
    return keys + extra


def compact_table(ci: pd.DataFrame, key: str | list[str] | None = None,
                  metrics: tuple[str, ...] = HEADLINE) -> list[dict[str, Any]]:
    """One row per group (keyed by every group-by column): n and, per headline metric,
    mean [low, high] with the interval's method, n and note (small enough for XCom)."""
    keys = _keys_of(ci, key)
    rows: dict[tuple, dict[str, Any]] = {}
    for r in ci.to_dict("records"):
        if r["metric"] not in metrics:
            continue
        ident = tuple(_plain(r[k]) for k in keys)
        row = rows.setdefault(ident, {**dict(zip(keys, ident, strict=True)), "n": 0})
        row["n"] = max(row["n"], int(r["n"]))
        row[r["metric"]] = {"mean": _num(r["mean"]), "ci_low": _num(r["ci_low"]),
                            "ci_high": _num(r["ci_high"]), "ci_method": r["ci_method"],
                            "estimator": r.get("estimator", "mean"), "n": int(r["n"]),
                            "publishable": bool(r.get("publishable", False)),
                            "note": _plain(r["note"])}
        row["publishable"] = row["n"] >= MIN_PUBLISHABLE
    return list(rows.values())


def _planned_run(e: Any) -> bool:
    """A plan entry of the right shape: the folder is writable by every experiment."""
    return isinstance(e, dict) and isinstance(e.get("name"), str) \
        and isinstance(e.get("config_hash"), str) and type(e.get("cycle")) is int \
        and e["cycle"] >= 1


def read_plans(root: str | Path, trusted: str | Path | None = None
               ) -> tuple[list[dict[str, Any]] | None, str | None, list[str]]:
    """Planned runs from every ``plan.json`` under ``root`` (None when there is none).

    A plan is ``{"runs": [{"name", "config_hash", "cycle", ...}], "compare_to": ...}``;
    each run gets ``plan_dir`` (its plan's folder). Returns (runs, compare_to, notes).
    Read as untrusted input (links below ``trusted``, default ``root``, not followed;
    regular files only, size-capped): a plan that is refused is a note.
    """
    runs: list[dict[str, Any]] | None = None
    compare_to: str | None = None
    notes: list[str] = []
    try:
        folder = untrusted.open_folder(root, trusted)
    except FileNotFoundError:
        return None, None, []
    except (OSError, ValueError) as exc:
        return None, None, [f"{untrusted.shown(root)}: plans not read: {exc}"]
    with folder:
        found, refused = untrusted.walk(folder, lambda n: n == PLAN_FILE)
        notes += [f"{folder.path / rel}: unreadable plan: {why}" for rel, why in refused
                  if Path(rel).name == PLAN_FILE]
        plans = []
        for rel in found:
            try:
                plans.append((folder.path / rel, untrusted.read_json(
                    folder, rel, untrusted.MAX_PLAN_BYTES)))
            except (OSError, ValueError) as exc:
                notes.append(f"{folder.path / rel}: unreadable plan: "
                             f"{str(exc).splitlines()[0][:200]}")
    for path, data in plans:
        try:
            entries = data.get("runs") if isinstance(data, dict) else None
            if not isinstance(entries, list) or not all(_planned_run(e) for e in entries):
                raise ValueError("runs: expected a list of {name, config_hash, cycle} "
                                 "(two strings and a positive integer)")
        except ValueError as exc:
            notes.append(f"{path}: unreadable plan: {str(exc).splitlines()[0][:200]}")
            continue
        runs = (runs or []) + [{**e, "plan_dir": str(path.parent)} for e in entries]
        if isinstance(data.get("compare_to"), str):
            compare_to = compare_to or data["compare_to"]
    return runs, compare_to, notes


def missing_runs(planned: list[dict[str, Any]],
                 results: list[tuple[str, ExperimentResult]]) -> list[dict[str, Any]]:
    """Planned runs with no result (under the plan's folder, when it says which)."""
    have: dict[tuple[str, int], list[Path]] = {}
    for path, r in results:
        have.setdefault((r.config_hash, r.cycle), []).append(Path(path).resolve())
    missing = []
    for p in planned:
        where = Path(p["plan_dir"]).resolve() if p.get("plan_dir") else None
        found = any(where is None or where in path.parents
                    for path in have.get((p["config_hash"], p["cycle"]), []))
        if not found:
            missing.append({"name": p["name"], "config_hash": p["config_hash"],
                            "cycle": p["cycle"],
                            "reason": p.get("reason", "no result (failed or did not run)"),
                            **({"run_dir": p["plan_dir"]} if p.get("plan_dir") else {})})
    return missing


def _group_columns(df: pd.DataFrame, group_by: list[str] | None
                   ) -> tuple[list[str] | None, list[str]]:
    """The table columns of the group-by fields, and a note per field that has none.

    A field holding fields (``decoding``) groups by each of them; a field no result has
    (``extra.x`` never set) is the same for every result and is left out, said in a note.
    """
    if not group_by:
        return None, []
    cols: list[str] = []
    notes: list[str] = []
    for g in group_by:
        col = g if g in df.columns or g.startswith("config.") else f"config.{g}"
        found = [col] if col in df.columns else sorted(
            c for c in df.columns if c.startswith(col + "."))
        if not found and not df.empty:
            notes.append(f"group_by {g}: no result has this field; left out of the grouping")
        cols += [c for c in found if c not in cols]
    return cols or None, notes


def _comparison(df: pd.DataFrame, compare_to: str | None, opts: CIOptions
                ) -> tuple[pd.DataFrame, dict[str, str] | None, str | None]:
    """(comparison table, {label, rule} of the reference, error) ."""
    if df.empty:
        return pd.DataFrame(), None, None
    try:
        cmp_df = compare(df, compare_to, opts=opts)
    except ValueError as exc:
        return pd.DataFrame(), None, str(exc)
    if cmp_df.empty:
        return cmp_df, None, None
    first = cmp_df.iloc[0]
    return cmp_df, {"label": first["reference"], "rule": first["reference_rule"]}, None


def _energy_missing(df: pd.DataFrame) -> dict[str, str]:
    """Configuration name -> why it has no energy (the meter's own reason where given)."""
    if df.empty:
        return {}
    out = {}
    for name, g in df[df["energy_source"] == "none"].groupby("config_name"):
        notes = g["energy_note"].dropna() if "energy_note" in g else pd.Series(dtype=object)
        reasons = sorted({str(n) for n in notes})
        out[str(name)] = "; ".join(reasons)[:300] or "no energy meter was readable"
    return out


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")]


def aggregate_dir(run_dir: str | Path, planned: list[dict[str, Any]] | None = None,
                  opts: CIOptions | None = None, group_by: list[str] | None = None,
                  notes: list[str] | None = None, *,
                  compare_to: str | None = None,
                  trusted: str | Path | None = None) -> dict[str, Any]:
    """Write results.parquet, summary.csv, comparison.csv, summary.md and aggregate.json
    under ``run_dir``; return the digest.

    ``planned``: the planned runs (default: read from ``plan.json`` files under
    ``run_dir``). ``compare_to``: the reference configuration (label, name or config
    hash; default: the plan's ``compare_to``, else the alphabetically first label).
    ``trusted``: the folder above ``run_dir`` whose links are followed (default:
    ``run_dir``); a link or special file below it is refused (ValueError for the run
    folder itself, a listed problem for anything in it).
    """
    opts = opts or CIOptions()
    run_dir = Path(run_dir)
    try:
        untrusted.open_folder(run_dir, trusted).close()
    except FileNotFoundError:
        pass
    except untrusted.Unreadable as exc:
        raise ValueError(f"{untrusted.shown(run_dir)}: {exc}") from None
    results, problems = load_results(run_dir, trusted)
    df = to_frame(results)
    if not df.empty:
        df = df.sort_values(["position", "cycle"], na_position="last", kind="stable")
    notes = list(notes or [])
    plan_runs, plan_compare_to, plan_notes = read_plans(run_dir, trusted)
    notes += plan_notes
    planned = plan_runs if planned is None else planned
    notes += [f"unreadable result {p.path}: {p.reason}" for p in problems]
    missing = missing_runs(planned, results) if planned is not None else []
    energy_missing = _energy_missing(df)
    if energy_missing:
        notes.append("no energy meter for: " + ", ".join(sorted(energy_missing))
                     + " (energy fields are empty, not zero)")
    cols, group_notes = _group_columns(df, group_by)
    notes += group_notes
    ci = summarise(df, group_by=cols, opts=opts)
    cmp_df, reference, ref_error = _comparison(df, compare_to or plan_compare_to, opts)
    if ref_error:
        notes.append(f"no comparison: {ref_error}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not df.empty:  # through write_atomic: a link planted at the name is not written through
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        write_atomic(run_dir / "results.parquet", buf.getvalue())
    write_atomic(run_dir / "summary.csv", ci.to_csv(index=False))
    write_atomic(run_dir / "comparison.csv", cmp_df.to_csv(index=False))
    keys = _keys_of(ci, cols)
    digest = {
        "run_dir": str(run_dir),
        "results": len(results),
        "measured": len(results),
        "planned": len(planned) if planned is not None else None,
        "missing": missing,
        "problems": [p.model_dump() for p in problems],
        "notes": notes,
        "confidence": opts.confidence,
        "group_by": keys,
        "reference": reference,
        "reference_error": ref_error,
        "table": compact_table(ci, cols) if not ci.empty else [],
        "energy_missing": energy_missing,
        "run_ids": sorted({str(r.run_id) for _, r in results if r.run_id}),
        "comparison": _records(cmp_df),
        "files": {"parquet": str(run_dir / "results.parquet") if not df.empty else None,
                  "csv": str(run_dir / "summary.csv"),
                  "comparison": str(run_dir / "comparison.csv"),
                  "markdown": str(run_dir / "summary.md")},
    }
    write_atomic(run_dir / "summary.md", markdown(digest, ci, keys))
    write_atomic(run_dir / "aggregate.json", json.dumps(digest, indent=2, default=str))
    return digest
