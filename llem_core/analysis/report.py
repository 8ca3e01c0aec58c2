"""A self-contained HTML report of a campaign run: tables and inline SVG charts.

The page needs no network and no JavaScript. Planned vs measured runs, failed, missing
and unreadable results are listed first. Where a metric was not measured (no energy
meter), its chart is left out with a sentence saying why, never drawn from made-up
numbers. Every value shown, from numbers to config names and energy sources, is escaped.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llem_core.analysis import metrics as registry
from llem_core.analysis.aggregate import missing_runs, read_plans
from llem_core.analysis.console_table import number
from llem_core.analysis.identity import identify
from llem_core.analysis.report_charts import (
    bar_chart,
    best_of,
    distribution_chart,
    drift_chart,
    scatter_chart,
)
from llem_core.analysis.results import ExperimentResult, load_results, to_frame, write_atomic
from llem_core.analysis.stats import MIN_PUBLISHABLE, CIOptions, compare, drift, summarise

# Kept for callers that import it; labels come from the metric registry.
LABELS = {m.name: m.label for m in registry.METRICS}
CSS = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#0f172a}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0 1.5rem}td,th{border:1px solid
#cbd5e1;padding:.2rem .45rem;text-align:right}th{background:#f1f5f9}td:first-child{text-align:
left}.chart{margin:1rem 0}.note{color:#b45309}figure{margin:0}.bad{color:#b91c1c}"""


def _e(v: Any) -> str:
    """Escaped text of any value; numbers with 4 significant digits, missing as '—'."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, float | np.floating):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval(r: dict[str, Any], factor: float = 1.0) -> str:
    if r["n"] == 0 or np.isnan(r["mean"]):
        return "—"
    if np.isnan(r["ci_low"]):
        return f"{number(r['mean'] * factor)} (no CI)"
    return (f"{number(r['mean'] * factor)} [{number(r['ci_low'] * factor)}, "
            f"{number(r['ci_high'] * factor)}]")


def wide_table(ci: pd.DataFrame, metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per configuration: n, whether it is publishable, 'estimate [low, high]' per
    metric in its display unit (latencies in ms; ★ the best publishable estimate), the
    interval methods and caveats."""
    best = {m: best_of(ci, m) for m in metrics}
    rows: dict[str, dict[str, Any]] = {}
    for r in ci.to_dict("records"):
        if r["metric"] not in metrics:
            continue
        row = rows.setdefault(r["config_label"], {"configuration": r["config_label"], "n": 0,
                                                  "_methods": set(), "_notes": {}})
        row["n"] = max(row["n"], int(r["n"]))
        _, factor = registry.display_unit(r["metric"])
        star = "★ " if best.get(r["metric"]) == r["config_label"] else ""
        row[registry.axis_label(r["metric"])] = star + _interval(r, factor)
        if r["n"] >= 2:
            row["_methods"].add(r["ci_method"])
        if r["note"]:
            row["_notes"][r["note"]] = None
    for row in rows.values():
        row["publishable"] = "yes" if row["n"] >= MIN_PUBLISHABLE else "NOT PUBLISHABLE"
        row["CI method"] = ", ".join(sorted(row.pop("_methods"))) or "none"
        row["caveats"] = "; ".join(row.pop("_notes")) or None
    return list(rows.values())


DEFINITIONS = (
    "<h2>Definitions</h2><ul>"
    "<li><b>Estimates.</b> Metrics that cannot be negative (throughput, raw energy, "
    "latencies): the geometric mean of the cycles with a Student t interval on the log "
    "scale (log-t), never below zero. Energy above idle can be negative (the idle baseline "
    "above the measured power): arithmetic mean with a Student t interval. Fewer than 3 "
    "cycles: NOT PUBLISHABLE (at n = 2 a 95 % interval spans about ±9 standard "
    "deviations); such rows are never the best, on a Pareto front or a finding.</li>"
    "<li><b>Energy per token, raw</b>: the GPU energy of the measured window (the "
    "steady-state window under a serving load) per output token, without subtracting the "
    "idle baseline: the figure comparable with the ML.ENERGY leaderboard. "
    "<b>Above idle</b>: the idle baseline's power times the window subtracted first.</li>"
    "<li><b>Serving loads</b>: output throughput covers the whole load (first request sent "
    "to last token); energy per token covers the steady-state window only (ML.ENERGY's "
    "definition: from the K-th first token to the (n-K-1)-th completion).</li>"
    "<li><b>Standard deviations</b> of cycles are sample standard deviations (n - 1); the "
    "latency table of serving runs gives vLLM's population standard deviation (n).</li>"
    "<li>★ marks the best publishable estimate of a metric; intervals that overlap mean "
    "the data do not tell the two apart (see the comparisons).</li></ul>")


def _serving_table(results: list[tuple[str, ExperimentResult]],
                   labels: dict[str, str]) -> str:
    """Per configuration, the latency figures as ``vllm bench serve`` prints them (ms,
    population std), averaged over cycles; empty without serving results."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for path, r in results:
        if r.serving is None:
            continue
        m = r.metrics
        row: dict[str, Any] = {"request throughput (req/s)": m.requests_per_s,
                               "output throughput (tokens/s)": m.output_tokens_per_s}
        for name, dist in (("TTFT", m.ttft_s), ("TPOT", m.tpot_s), ("ITL", m.itl_s),
                           ("E2E", m.e2e_s)):
            for stat, value in (("mean", dist.mean), ("std", dist.std_population),
                                ("p50", dist.p50), ("p99", dist.p99)):
                row[f"{name} {stat} (ms)"] = None if value is None else value * 1e3
        rows.setdefault(labels.get(path, r.name), []).append(row)
    if not rows:
        return ""
    table = []
    for name, cycles in rows.items():
        out: dict[str, Any] = {"configuration": name, "cycles": len(cycles)}
        for key in cycles[0]:
            vals = [c[key] for c in cycles if c[key] is not None]
            out[key] = float(np.mean(vals)) if vals else None
        table.append(out)
    cols = list(table[0])
    return ("<h2>Serving latency as vllm bench serve reports it</h2><p>Per configuration, "
            "the mean over cycles of each cycle's figure; std is the population standard "
            "deviation over requests (vLLM's), in ms.</p>" + _table(table, cols))


def _provenance(results: list[tuple[str, ExperimentResult]], df: pd.DataFrame) -> str:
    """Each distinct environment once, as readable text, with how many results had it."""
    seen: Counter[str] = Counter()
    for _, r in results:
        p = r.provenance
        gpus = ", ".join(str(g.get("name")) for g in p.hardware.get("gpus", [])) or "none"
        libs = ", ".join(f"{k} {v}" for k, v in sorted(p.libraries.items()) if v) or "none"
        seen[(f"host {p.host} · {p.platform} · Python {p.python} · llem {p.llem_version} · "
              f"device {p.device} · GPUs: {gpus} · driver {p.hardware.get('driver') or 'n/a'}"
              f" · {'container' if p.in_container else 'no container'} · libraries: {libs}")] += 1
    items = "".join(f"<li>{html.escape(text)} ({n} results)</li>" for text, n in seen.items())
    sources = ", ".join(f"{s} ({n})" for s, n in df["energy_source"].value_counts().items())
    return (f"<h2>Environment and provenance</h2><ul>{items}"
            f"<li>energy sources: {html.escape(sources)}</li></ul>")


def _header(df: pd.DataFrame, planned: list[dict[str, Any]] | None,
            missing: list[dict[str, Any]], problems: list[Any]) -> str:
    campaigns = ", ".join(sorted(set(df["campaign"].astype(str))))
    runs = ", ".join(sorted(set(df["run_id"].astype(str))))
    counts = (f"{len(planned)} planned · {len(df)} measured · {len(missing)} failed or "
              "missing" if planned is not None else f"{len(df)} measured · planned unknown "
              "(no plan.json)")
    parts = [f"<h1>Campaign {html.escape(campaigns)}</h1><p>run {html.escape(runs)} · "
             f"{html.escape(counts)} · {len(problems)} unreadable or duplicate files · "
             f"{df['config_label'].nunique()} configurations · cycles "
             f"{int(df['cycle'].max())}</p>"]
    if missing:
        parts.append("<h2 class='bad'>Failed or missing runs</h2>"
                     + _table(missing, ["name", "cycle", "config_hash", "reason"]))
    if problems:
        parts.append("<h2 class='bad'>Unreadable or duplicate result files</h2>"
                     + _table([p.model_dump() for p in problems], ["path", "reason"]))
    return "".join(parts)


def _drawn(title: str, notes: list[str], draw: Callable[[], Any]) -> Any:
    """One chart, or None with a note saying why it could not be drawn: the page shows the
    rest (the data come from files any experiment can write)."""
    try:
        return draw()
    except Exception as exc:  # any failure of one chart loses that chart only
        reason = (str(exc).splitlines() or [""])[0][:200]
        notes.append(f"chart '{title}' could not be drawn: {type(exc).__name__}: {reason}")
        return None


def _charts(df: pd.DataFrame, ci: pd.DataFrame, results: list[tuple[str, ExperimentResult]],
            notes: list[str]) -> str:
    charts = []
    for em, other, maxi, title in (
            ("j_per_token_raw", "tokens_per_s", True, "energy per token vs throughput"),
            ("j_per_token_raw", "ttft_p90_s", False, "energy per token vs TTFT p90")):
        drawn = _drawn(title, notes, lambda em=em, other=other, maxi=maxi, title=title:
                       scatter_chart(ci, em, other, maxi, title))
        if drawn is None:
            continue
        svg, front = drawn
        if svg:
            on_front = ", ".join(front) or "none (no configuration has 3 cycles)"
            charts.append((title, svg, "Raw energy per token (ML.ENERGY-comparable). "
                           f"Pareto front: {on_front}"))
        else:
            notes.append(f"chart '{title}' omitted: J/token was not measured")
    for metric in ("tokens_per_s", "j_per_token_raw", "j_per_token_adjusted", "ttft_p50_s",
                   "itl_p50_s"):
        if svg := _drawn(registry.label(metric), notes, lambda m=metric: bar_chart(ci, m)):
            charts.append((registry.label(metric), svg, ""))
    for metric in ("energy_raw_j", "tokens_per_s"):
        title = f"{registry.label(metric)} over cycles"
        if svg := _drawn(title, notes, lambda m=metric: drift_chart(df, m)):
            charts.append((title, svg, ""))
    labels = dict(zip(df["result_path"], df["config_label"], strict=True))
    ttft: dict[str, dict[str, list[float]]] = {}
    itl: dict[str, dict[str, list[float]]] = {}
    for path, r in results:
        name = labels.get(path, r.name)
        if r.metrics.per_request is not None:
            ttft.setdefault(name, {"ttft": []})["ttft"].extend(
                x for x in r.metrics.per_request.ttft_s if x is not None)
        if r.metrics.itl_s.p50 is not None:
            itl.setdefault(name, {"itl": []})["itl"].append(r.metrics.itl_s.p50)
    for data, key, title, label in ((ttft, "ttft", "TTFT", "TTFT"),
                                    (itl, "itl", "ITL p50 per run", "ITL")):
        if svg := _drawn(f"{label} distribution", notes,
                         lambda d=data, k=key, t=title: distribution_chart(d, k, t)):
            charts.append((f"{label} distribution", svg, ""))
    return "<h2>Charts</h2>" + "".join(
        f"<figure class='chart' data-chart='{html.escape(title)}'>{svg}"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for title, svg, caption in charts)


def _comparison(df: pd.DataFrame, compare_to: str | None, opts: CIOptions,
                notes: list[str]) -> str:
    try:
        cmp_df = compare(df, compare_to, opts=opts)
    except ValueError as exc:
        notes.append(f"no comparison: {exc}")
        return ""
    if cmp_df.empty:
        return ""
    rows = []
    for c in cmp_df.to_dict("records"):
        rows.append({**c, "difference [CI]": _interval(
            {"n": c["n_pairs"], "mean": c["diff_mean"], "ci_low": c["diff_ci_low"],
             "ci_high": c["diff_ci_high"]}),
            "ratio of geometric means [CI]": _interval(
            {"n": c["n_pairs"], "mean": c["ratio"], "ci_low": c["ratio_ci_low"],
             "ci_high": c["ratio_ci_high"]}),
            "finding": "yes" if c["finding"] else "no"})
    first = cmp_df.iloc[0]
    return (f"<h2>Against the reference <code>{html.escape(str(first['reference']))}</code> "
            f"(paired by campaign, run and cycle)</h2><p>Reference: "
            f"{html.escape(str(first['reference_rule']))}. A finding needs at least 3 paired "
            "cycles and a difference interval that excludes 0.</p>"
            + _table(rows, ["config_label", "metric", "n_pairs", "difference [CI]",
                            "ratio of geometric means [CI]", "p_value", "ci_method",
                            "ratio_ci_method",
                            "finding", "note"]))


def _drift(df: pd.DataFrame) -> str:
    dr = drift(df)
    if dr.empty:
        return ""
    drifted = sorted(set(dr.loc[dr["drifted"], "config_label"]))
    text = ("Drifted (Spearman p &lt; 0.05): " + html.escape(", ".join(drifted)) if drifted
            else "No configuration drifted significantly over cycles.")
    return (f"<h2>Drift</h2><p>{text}</p>" + _table(
        dr.to_dict("records"), ["config_label", "run_id", "metric", "n", "spearman_rho",
                                "p_value", "p_method", "drifted", "note"]))


def build_report(run_dir: str | Path, compare_to: str | None = None,
                 opts: CIOptions | None = None, *,
                 planned: list[dict[str, Any]] | None = None,
                 trusted: str | Path | None = None) -> str:
    """The HTML text of the report for all result files under ``run_dir``.

    ``compare_to``: reference configuration (label, name or hash; default: the
    ``compare_to`` of ``plan.json``, else alphabetically first). ``planned``: the planned
    runs (default: read from ``plan.json`` files under ``run_dir``). ``trusted``: the
    folder above ``run_dir`` whose links are followed (default: ``run_dir``): the files
    are read as untrusted input (:mod:`llem_core.analysis.untrusted_files`); a chart that cannot
    be drawn is a note, the rest of the page stands.
    """
    opts = opts or CIOptions()
    results, problems = load_results(run_dir, trusted)
    plan_runs, plan_compare_to, notes = read_plans(run_dir, trusted)
    planned = plan_runs if planned is None else planned
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>llem report</title>"
            f"<style>{CSS}</style></head><body>")
    if not results:
        return (head + f"<h1>llem report</h1><p>No results under {html.escape(str(run_dir))}"
                f" ({len(planned) if planned is not None else 'unknown'} planned).</p>"
                + _table([p.model_dump() for p in problems], ["path", "reason"])
                + "</body></html>")
    df = identify(to_frame(results)).sort_values(["position", "cycle"], kind="stable")
    missing = missing_runs(planned, results) if planned is not None else []
    parts = [head, _header(df, planned, missing, problems), _provenance(results, df)]
    if (df["energy_source"] == "none").all():
        notes.append("no energy meter was available: energy columns are empty and the "
                     "energy charts are omitted")
    no_energy = df.loc[df["energy_source"] == "none"]
    for name, g in no_energy.groupby("config_label"):
        reasons = sorted({str(x) for x in g.get("energy_note", pd.Series(dtype=object))
                          .dropna()}) or ["no meter was readable"]
        notes.append(f"{name}: no energy measured ({'; '.join(reasons)[:300]})")
    ci = summarise(df, opts=opts)
    parts.append(f"<h2>Per-configuration estimates with {opts.confidence:.0%} confidence "
                 "intervals</h2><p>estimate [low, high] in the unit of the column; all "
                 "metrics and the long table are in summary.csv.</p>")
    table = wide_table(ci, registry.headline())
    parts.append(_table(table, list(dict.fromkeys(k for row in table for k in row))))
    parts.append(DEFINITIONS)
    labels = dict(zip(df["result_path"], df["config_label"], strict=True))
    parts.append(_serving_table(results, labels))
    parts.append(_charts(df, ci, results, notes))
    parts.append(_comparison(df, compare_to or plan_compare_to, opts, notes))
    parts.append(_drift(df))
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(
            f"<li class='note'>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(run_dir: str | Path, out: str | Path, compare_to: str | None = None,
                 opts: CIOptions | None = None, *,
                 planned: list[dict[str, Any]] | None = None,
                 trusted: str | Path | None = None) -> Path:
    """Write the HTML report of ``run_dir`` to ``out`` (atomically); return its path."""
    write_atomic(out, build_report(run_dir, compare_to, opts, planned=planned,
                                   trusted=trusted))
    return Path(out)
