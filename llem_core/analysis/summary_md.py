"""summary.md: the aggregate digest as Markdown (planned vs measured, CI table, findings)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def fmt(v: Any) -> str:
    """A number with 4 significant digits; '—' for missing."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(x) else f"{x:.4g}"


def _cell(v: Any) -> str:
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def finding_line(c: dict[str, Any]) -> str:
    """One comparison that is a finding, as a sentence with its n and method."""
    ratio = (f"ratio of geometric means {fmt(c['ratio'])} [{fmt(c['ratio_ci_low'])}, "
             f"{fmt(c['ratio_ci_high'])}]" if c.get("ratio") is not None else "no ratio")
    verdict = {True: "better", False: "worse"}.get(c.get("better"), "different")
    return (f"{c['config_label']} vs {c['reference']}: {c['metric']} {verdict}: "
            f"difference {fmt(c['diff_mean'])} [{fmt(c['diff_ci_low'])}, "
            f"{fmt(c['diff_ci_high'])}], {ratio} (n = {c['n_pairs']}, {c['ci_method']}, "
            f"p = {fmt(c['p_value'])})")


def markdown(digest: dict[str, Any], ci: pd.DataFrame, keys: list[str]) -> str:
    conf = digest["confidence"]
    planned = digest["planned"]
    lines = ["# Campaign run summary", "",
             f"- measured: {digest['measured']} results; planned: "
             f"{planned if planned is not None else 'unknown (no plan)'}"]
    if digest["reference"]:
        ref = digest["reference"]
        lines.append(f"- reference for comparisons: {_cell(ref['label'])} ({ref['rule']})")
    lines.append("")
    if digest["missing"]:
        lines += ["## Failed or missing runs", ""]
        lines += [f"- {_cell(m['name'])} (cycle {m['cycle']}, {m['config_hash']}): "
                  f"{_cell(m['reason'])}" for m in digest["missing"]]
        lines.append("")
    lines += [f"## Per-configuration estimates with {conf:.0%} confidence intervals", "",
              "Metrics that cannot be negative: geometric mean of the cycles, t interval on "
              "the log scale (log-t); idle-adjusted energy: arithmetic mean, t interval. "
              "Rows with fewer than 3 cycles are not publishable.", "",
              "| " + " | ".join(keys) + " | metric | unit | n | estimate | estimator | CI low | "
              "CI high | method | publishable | note |", "|" + "---|" * (len(keys) + 10)]
    for r in ci.to_dict("records"):
        publishable = "yes" if r.get("publishable") else "**no**"
        lines.append("| " + " | ".join(_cell(r[k]) for k in keys)
                     + f" | {r['metric']} | {_cell(r.get('unit'))} | {r['n']} | "
                     f"{fmt(r['mean'])} | {_cell(r.get('estimator'))} | "
                     f"{fmt(r['ci_low'])} | {fmt(r['ci_high'])} | {r['ci_method']} | "
                     f"{publishable} | {_cell(r['note'])} |")
    findings = [c for c in digest["comparison"] if c["finding"]]
    lines += ["", "## Findings against the reference (paired by campaign, run and cycle)", ""]
    lines += [f"- {_cell(finding_line(c))}" for c in findings] or [
        "- none (no difference whose interval excludes 0 with at least 3 paired cycles)"]
    if digest["notes"]:
        lines += ["", "## Notes", ""] + [f"- {_cell(n)}" for n in digest["notes"]]
    return "\n".join(lines) + "\n"
