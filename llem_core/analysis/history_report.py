"""The history of a campaign as files: tables (CSV, Parquet) and a self-contained HTML page:
its change points first, then one chart per metric (run dates on the x axis, the unit on
the y axis, change points and provenance changes marked), and the tables. Every value is
escaped text; the only markup in a cell is llem's own link to a DAG run."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import pandas as pd

from llem_core.analysis.airflow_links import dag_run_url
from llem_core.analysis.console_table import number
from llem_core.analysis.history import History
from llem_core.analysis.metrics import axis_label, display_unit, short_label
from llem_core.analysis.regression import METHOD, change_size
from llem_core.analysis.report_charts import SVG_METADATA, drawn_as_text
from llem_core.analysis.report_charts import text as label_text
from llem_core.analysis.results import write_atomic

RATES = ("tokens_per_s", "requests_per_s")  # drawn on a log scale: changes are relative


def _tick(run: dict[str, Any], same_day: bool) -> str:
    started = str(run.get("started_at") or "")
    if len(started) >= 16:
        return started[5:16].replace("T", " ") if same_day else started[:10]
    return label_text(run["run_id"])[:16]


@drawn_as_text
def _chart(h: History, metric: str) -> str | None:
    """One metric across runs: each configuration's estimate with its interval, change
    points as red marks with their size, provenance changes as grey lines; run dates on
    the x axis, the unit on the y axis, rates on a log scale."""
    import matplotlib.pyplot as plt

    pts = h.points[h.points["metric"] == metric] if not h.points.empty else h.points
    if pts.empty:
        return None
    _, f = display_unit(metric)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for name, g in pts.groupby("config_name", sort=True):
        err = [(g["mean"] - g["ci_low"]).fillna(0).clip(lower=0) * f,
               (g["ci_high"] - g["mean"]).fillna(0).clip(lower=0) * f]
        ax.errorbar(g["order"], g["mean"] * f, yerr=err, marker="o", capsize=3,
                    label=label_text(name))
    order = dict(zip(h.runs["run_id"], h.runs["order"], strict=True))
    for run_after, g in h.changes.groupby("run_after", sort=False):
        x = order[run_after] - 0.5
        ax.axvline(x, color="#94a3b8", linestyle=":", linewidth=1)
        ax.annotate(", ".join(sorted(set(g["field"]))), (x, 1.0), xycoords=("data", "axes "
                    "fraction"), fontsize=7, color="#475569", rotation=90, va="top",
                    ha="right")
    cps = h.change_points[h.change_points["metric"] == metric] \
        if not h.change_points.empty else h.change_points
    for c in cps.to_dict("records"):
        x = order[c["run_id"]] - 0.5
        ax.axvline(x, color="#dc2626", linestyle="--", linewidth=1.5)
        size = "" if c["rel_change"] is None or pd.isna(c["rel_change"]) \
            else f" {c['rel_change']:+.0%}"
        ax.annotate(f"change{size}", (x, 0.02), xycoords=("data", "axes fraction"),
                    fontsize=7, color="#dc2626", rotation=90, va="bottom", ha="left")
    runs = h.runs.to_dict("records")
    days = [str(r.get("started_at") or "")[:10] for r in runs]
    same_day = len(set(days)) < len(days)
    step = max(1, len(runs) // 12)
    ax.set_xticks([r["order"] for r in runs][::step])
    ax.set_xticklabels([_tick(r, same_day) for r in runs][::step], rotation=30, ha="right",
                       fontsize=7)
    ax.set_xlabel("run (started at, UTC)")
    ax.set_ylabel(axis_label(metric))
    if metric in RATES and (pts["ci_low"].dropna() > 0).all() and (pts["mean"] > 0).all():
        ax.set_yscale("log")
    ax.set_title(short_label(metric))
    ax.legend(fontsize=7, loc="best")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata=SVG_METADATA)
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Escaped text cells; a value of a column named in ``_HTML`` is already markup."""
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c), c in r.get('_html', ()))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v: Any, markup: bool = False) -> str:
    if markup:
        return str(v)
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return html.escape(number(v) if isinstance(v, float) else str(v))


def _drawn(h: History, metric: str, failed: list[str]) -> str | None:
    """One metric's chart, or None and a sentence why: the page shows the rest."""
    try:
        return _chart(h, metric)
    except Exception as exc:  # the data come from files anyone could write
        reason = (str(exc).splitlines() or [""])[0][:200]
        failed.append(f"chart {short_label(metric)} could not be drawn: "
                      f"{type(exc).__name__}: {reason}")
        return None


def _run_link(dag_id: str | None, run_id: str) -> str:
    if not dag_id:
        return html.escape(run_id)
    return (f'<a href="{html.escape(dag_run_url(dag_id, run_id), quote=True)}" target="_top">'
            f"{html.escape(run_id)}</a>")


def _in_unit(metric: str, v: Any) -> str:
    unit, f = display_unit(metric)
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "—"
    return f"{number(float(v) * f)} {unit}"


def _change_rows(h: History, dag_id: str | None) -> list[dict[str, Any]]:
    rows = []
    for c in h.change_points.to_dict("records"):
        size = change_size(c["rel_change"], c["rel_change_ci_low"], c["rel_change_ci_high"])
        causes = "; ".join(f"{x['field']} {x['before']} -> {x['after']} ({x['where']})"
                           for x in c["likely_causes"] or [])
        rows.append({"configuration": c["config_name"], "metric": short_label(c["metric"]),
                     "first run after": _run_link(dag_id, str(c["run_id"])),
                     "before": _in_unit(c["metric"], c["level_before"]),
                     "after": _in_unit(c["metric"], c["level_after"]),
                     "change [95 % CI]": size, "p": c["p_value"],
                     "runs before / after": f"{c['runs_before']} / {c['runs_after']}",
                     "likely cause": causes or "—", "_html": ("first run after",)})
    return rows


def history_html(h: History, title: str, dag_id: str | None = None) -> str:
    """The page of ``llem history`` and ``/llem/history``: change points first, then one
    chart per metric, what changed between runs, the runs (linked to their DAG runs when
    ``dag_id`` is given) and every point."""
    metrics = list(dict.fromkeys(h.points["metric"])) if not h.points.empty else []
    failed: list[str] = []
    charts = [(m, _drawn(h, m, failed)) for m in metrics]
    runs = [{**r, "run": _run_link(dag_id, str(r["run_id"])), "_html": ("run",)}
            for r in h.runs.to_dict("records")]
    flags = [{**f, "metric": short_label(f["metric"]),
              "latest − previous": _in_unit(f["metric"], f["diff_mean"]),
              "CI": f"[{_in_unit(f['metric'], f['diff_ci_low'])}, "
                    f"{_in_unit(f['metric'], f['diff_ci_high'])}]",
              "interval excludes 0": f["flagged"]}
             for f in h.flags.to_dict("records")] if not h.flags.empty else []
    points = [{**p, "metric": short_label(p["metric"]),
               "estimate": _in_unit(p["metric"], p["mean"]),
               "CI": f"[{_in_unit(p['metric'], p['ci_low'])}, "
                     f"{_in_unit(p['metric'], p['ci_high'])}]"}
              for p in h.points.to_dict("records")] if not h.points.empty else []
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<h2>Change points ({len(h.change_points)})</h2>",
             f"<p>Found over all {len(h.runs)} runs ({html.escape(METHOD)}, p &le; "
             f"{h.max_pvalue:g}, windows of {h.window} runs): each is reported at the first "
             "run at the new level and stays there as runs are added. Each run counts as "
             "one value made from its cycles, so the run-to-run variation is part of the "
             "test.</p>",
             _table(_change_rows(h, dag_id), ["configuration", "metric", "first run after",
                                              "before", "after", "change [95 % CI]", "p",
                                              "runs before / after", "likely cause"]),
             "<p>Charts: one point per run and configuration (the estimate over its cycles: "
             "geometric mean with a log-t interval where the metric cannot be negative); "
             "red dashed lines are change points, grey dotted lines runs whose provenance "
             "changed; throughput on a log scale.</p>"]
    parts += [f"<figure class='chart'><figcaption>{html.escape(short_label(m))}</figcaption>"
              f"{svg}</figure>" for m, svg in charts if svg]
    parts += ["<h2>What changed between runs</h2>",
              _table(h.changes.to_dict("records"),
                     ["run_before", "run_after", "field", "before", "after"]),
              "<h2>Runs</h2>",
              _table(runs, ["order", "run", "started_at", "results", "configurations"]),
              "<h2>Latest run against the previous one</h2><p>A comparison (Welch t "
              "interval of the difference), not an alarm: with day-to-day variation it "
              "excludes 0 often. The alarms are the change points above.</p>",
              _table(flags, ["config_name", "metric", "reference", "run", "n_reference",
                             "n_run", "latest − previous", "CI", "rel_change",
                             "interval excludes 0", "note"]),
              "<h2>Points</h2>",
              _table(points, ["config_name", "metric", "order", "run_id", "n", "estimate",
                              "CI", "ci_method", "note"])]
    parts += [f"<p>{html.escape(f)}</p>" for f in failed]
    parts += [f"<p>unreadable: {html.escape(p.path)}: {html.escape(p.reason)}</p>"
              for p in h.problems]
    style = ("body{font-family:system-ui,sans-serif;margin:1.5rem}table{border-collapse:"
             "collapse}td,th{border:1px solid #cbd5e1;padding:.2rem .5rem;font-size:.85rem}"
             "figure{margin:1rem 0}svg{max-width:100%;height:auto}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_history(h: History, out: Path, title: str) -> dict[str, str]:
    """Write history.csv/.parquet, changes.csv, flags.csv and history.html into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"points_csv": out / "history.csv", "points_parquet": out / "history.parquet",
             "changes_csv": out / "changes.csv", "flags_csv": out / "flags.csv",
             "html": out / "history.html"}
    write_atomic(files["points_csv"], h.points.to_csv(index=False))
    if not h.points.empty:  # through write_atomic: never written through a planted link
        buf = io.BytesIO()
        h.points.to_parquet(buf, index=False)
        write_atomic(files["points_parquet"], buf.getvalue())
    else:
        files.pop("points_parquet")
    write_atomic(files["changes_csv"], h.changes.to_csv(index=False))
    write_atomic(files["flags_csv"], h.flags.to_csv(index=False))
    write_atomic(files["html"], history_html(h, title))
    return {k: str(v) for k, v in files.items()}
