"""A self-contained HTML report of a campaign run: tables and inline SVG charts.

Charts are drawn with matplotlib (Agg) and embedded as SVG, so the page needs no network
and no JavaScript. Where a metric was not measured (no energy meter), its chart is left
out with a sentence saying why, never drawn from made-up numbers.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llem_core.results import load_results, to_frame, write_atomic
from llem_core.stats import CIOptions, compare, drift, pareto_front, summarise

LABELS = {
    "tokens_per_s": "output tokens/s", "j_per_token_adjusted": "J per output token (adjusted)",
    "j_per_token_raw": "J per output token (raw)", "energy_adjusted_j": "energy above idle (J)",
    "energy_raw_j": "energy (J)", "ttft_p50_s": "TTFT p50 (s)", "ttft_p90_s": "TTFT p90 (s)",
    "itl_p50_s": "ITL p50 (s)", "itl_p90_s": "ITL p90 (s)",
}


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ci_frame(ci: pd.DataFrame, metric: str) -> pd.DataFrame:
    return ci[ci["metric"] == metric].set_index("config_name")


def scatter_chart(ci: pd.DataFrame, energy_metric: str, other: str, maximise_other: bool,
                  title: str) -> tuple[str | None, list[str]]:
    e, o = _ci_frame(ci, energy_metric), _ci_frame(ci, other)
    pts = pd.DataFrame({"e": e["mean"], "o": o["mean"]}).dropna()
    if pts.empty:
        return None, []
    front = pareto_front(pts, "e", "o", maximise_other)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in pts.index:
        xerr = [[pts.loc[name, "o"] - o.loc[name, "ci_low"]],
                [o.loc[name, "ci_high"] - pts.loc[name, "o"]]]
        yerr = [[pts.loc[name, "e"] - e.loc[name, "ci_low"]],
                [e.loc[name, "ci_high"] - pts.loc[name, "e"]]]
        on = name in front
        ax.errorbar(pts.loc[name, "o"], pts.loc[name, "e"],
                    xerr=np.nan_to_num(np.array(xerr, float)),
                    yerr=np.nan_to_num(np.array(yerr, float)), fmt="o",
                    color="#dc2626" if on else "#64748b", capsize=3)
        ax.annotate(name, (pts.loc[name, "o"], pts.loc[name, "e"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    fp = pts.loc[front].sort_values("o")
    ax.plot(fp["o"], fp["e"], "--", color="#dc2626", label="Pareto front")
    ax.set_xlabel(LABELS.get(other, other))
    ax.set_ylabel(LABELS.get(energy_metric, energy_metric))
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _svg(fig), front


def bar_chart(ci: pd.DataFrame, metric: str) -> str | None:
    d = _ci_frame(ci, metric).dropna(subset=["mean"])
    if d.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.35 * len(d)))
    low = np.nan_to_num((d["mean"] - d["ci_low"]).to_numpy(float))
    high = np.nan_to_num((d["ci_high"] - d["mean"]).to_numpy(float))
    ax.barh(list(d.index), d["mean"], xerr=[low, high], color="#3b82f6", capsize=3)
    ax.set_xlabel(LABELS.get(metric, metric))
    ax.set_title(f"{LABELS.get(metric, metric)}: mean with {ci['confidence'].iloc[0]:.0%} CI")
    return _svg(fig)


def drift_chart(df: pd.DataFrame, metric: str) -> str | None:
    if metric not in df or df[metric].dropna().empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for name, g in df.groupby("config_name", sort=False):
        g = g.sort_values("cycle")
        ax.plot(g["cycle"], g[metric], marker="o", label=str(name))
    ax.set_xlabel("cycle")
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_title(f"{LABELS.get(metric, metric)} over cycles (drift)")
    ax.legend(fontsize=7)
    return _svg(fig)


def distribution_chart(per_request: dict[str, dict[str, list[float]]], key: str,
                       label: str) -> str | None:
    data = {n: [v for v in d.get(key, []) if v is not None] for n, d in per_request.items()}
    data = {n: v for n, v in data.items() if v}
    if not data:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.4 * len(data)))
    ax.boxplot([np.asarray(v) * 1e3 for v in data.values()], orientation="horizontal",
               tick_labels=list(data))
    ax.set_xlabel(f"{label} (ms)")
    ax.set_title(f"{label} distribution per configuration (all requests)")
    return _svg(fig)


def _table(df: pd.DataFrame, cols: list[str]) -> str:
    if df.empty:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in df[cols].to_dict("records"):
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                v = "—" if np.isnan(v) else f"{v:.4g}"
            cells.append(f"<td>{html.escape(str(v if v is not None else ''))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#0f172a}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0 1.5rem}td,th{border:1px solid
#cbd5e1;padding:.2rem .45rem;text-align:right}th{background:#f1f5f9}td:first-child{text-align:
left}.chart{margin:1rem 0}.note{color:#b45309}figure{margin:0}"""


def build_report(run_dir: str | Path, reference: str | None = None,
                 opts: CIOptions | None = None) -> str:
    """The HTML text of the report for all result files under ``run_dir``."""
    results, problems = load_results(run_dir)
    df = to_frame(results)
    opts = opts or CIOptions()
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>llem report</title>"
             f"<style>{CSS}</style></head><body>"]
    if df.empty:
        parts.append(f"<h1>llem report</h1><p>No results under {html.escape(str(run_dir))}."
                     "</p></body></html>")
        return "".join(parts)
    first = results[0][1]
    parts.append(f"<h1>Campaign {html.escape(str(first.campaign))}</h1>"
                 f"<p>run <code>{html.escape(str(first.run_id))}</code> · {len(results)} "
                 f"results · {df['config_name'].nunique()} configurations · "
                 f"cycles {int(df['cycle'].max())}</p>")
    prov = first.provenance
    gpus = ", ".join(str(g.get("name")) for g in prov.hardware.get("gpus", [])) or "none"
    parts.append("<h2>Environment and provenance</h2><ul>"
                 f"<li>host {html.escape(prov.host)}, {html.escape(prov.platform)}</li>"
                 f"<li>device {html.escape(prov.device)}; GPUs: {html.escape(gpus)}; "
                 f"driver {html.escape(str(prov.hardware.get('driver')))}</li>"
                 f"<li>libraries: {html.escape(str(prov.libraries))}</li>"
                 f"<li>energy sources: {', '.join(sorted(df['energy_source'].unique()))}</li>"
                 "</ul>")
    notes = [f"unreadable result {p.path}: {p.reason}" for p in problems]
    if (df["energy_source"] == "none").all():
        notes.append("no energy meter was available: energy columns are empty and the "
                     "energy charts are omitted")
    ci = summarise(df, opts=opts)
    order = list(dict.fromkeys(df.sort_values("position")["config_name"]))
    ci["config_name"] = pd.Categorical(ci["config_name"], order, ordered=True)
    ci = ci.sort_values(["config_name", "metric"])
    ci["config_name"] = ci["config_name"].astype(str)
    parts.append(f"<h2>Per-configuration means with {opts.confidence:.0%} bootstrap CI</h2>")
    parts.append(_table(ci, ["config_name", "metric", "unit", "n", "mean", "ci_low",
                             "ci_high", "ci_method", "note"]))
    charts = []
    for em, other, maxi, title in (
            ("j_per_token_adjusted", "tokens_per_s", True, "energy vs throughput"),
            ("j_per_token_adjusted", "ttft_p90_s", False, "energy vs TTFT p90")):
        svg, front = scatter_chart(ci, em, other, maxi, title)
        if svg:
            charts.append((title, svg, f"Pareto front: {', '.join(front)}"))
        else:
            notes.append(f"chart '{title}' omitted: J/token was not measured")
    for metric in ("tokens_per_s", "ttft_p50_s", "itl_p50_s", "j_per_token_adjusted"):
        svg = bar_chart(ci, metric)
        if svg:
            charts.append((LABELS[metric], svg, ""))
    for metric in ("energy_raw_j", "tokens_per_s"):
        svg = drift_chart(df, metric)
        if svg:
            charts.append((f"{LABELS[metric]} over cycles", svg, ""))
    per_request: dict[str, dict[str, list[float]]] = {}
    for _, r in results:
        pr = r.metrics.per_request
        if pr is None:
            continue
        d = per_request.setdefault(r.name, {"ttft": []})
        d["ttft"].extend(x for x in pr.ttft_s if x is not None)
    itl = {r.name: {"itl": []} for _, r in results}
    for _, r in results:
        if r.metrics.itl_s.p50 is not None:
            itl[r.name]["itl"].append(r.metrics.itl_s.p50)
    for svg, label in ((distribution_chart(per_request, "ttft", "TTFT"), "TTFT"),
                       (distribution_chart(itl, "itl", "ITL p50 per run"), "ITL")):
        if svg:
            charts.append((f"{label} distribution", svg, ""))
    parts.append("<h2>Charts</h2>")
    for title, svg, caption in charts:
        parts.append(f"<figure class='chart' data-chart='{html.escape(title)}'>{svg}"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    try:
        cmp_df = compare(df, reference, opts=opts)
    except ValueError as exc:
        cmp_df = pd.DataFrame()
        notes.append(str(exc))
    if not cmp_df.empty:
        parts.append(f"<h2>Against the reference <code>{html.escape(cmp_df['reference'].iloc[0])}"
                     "</code> (paired by cycle)</h2>")
        parts.append(_table(cmp_df, ["config_name", "metric", "n_pairs", "diff_mean",
                                     "diff_ci_low", "diff_ci_high", "ratio", "ratio_ci_low",
                                     "ratio_ci_high", "excludes_zero", "note"]))
    dr = drift(df)
    drifted = sorted(set(dr.loc[dr["drifted"], "config_name"])) if not dr.empty else []
    parts.append("<h2>Drift</h2><p>" + ("Drifted (Spearman p &lt; 0.05): "
                 + html.escape(", ".join(drifted)) if drifted else "No configuration drifted "
                 "significantly over cycles.") + "</p>")
    parts.append(_table(dr, ["config_name", "metric", "n", "spearman_rho", "p_value",
                             "drifted", "note"]) if not dr.empty else "")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(
            f"<li class='note'>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(run_dir: str | Path, out: str | Path, reference: str | None = None,
                 opts: CIOptions | None = None) -> Path:
    write_atomic(out, build_report(run_dir, reference, opts))
    return Path(out)
