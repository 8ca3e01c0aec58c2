"""The history of a campaign as files: tables (CSV, Parquet) and a self-contained HTML page
with one chart per metric, run order on the x axis, provenance changes marked."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import pandas as pd

from llem_core.history import History
from llem_core.report_charts import drawn_as_text
from llem_core.report_charts import text as label_text
from llem_core.results import write_atomic


@drawn_as_text
def _chart(h: History, metric: str) -> str | None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    pts = h.points[h.points["metric"] == metric] if not h.points.empty else h.points
    if pts.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, g in pts.groupby("config_name", sort=True):
        err = [(g["mean"] - g["ci_low"]).fillna(0), (g["ci_high"] - g["mean"]).fillna(0)]
        ax.errorbar(g["order"], g["mean"], yerr=err, marker="o", capsize=3, label=label_text(name))
    order = dict(zip(h.runs["run_id"], h.runs["order"], strict=True))
    for run_after, g in h.changes.groupby("run_after", sort=False):
        x = order[run_after] - 0.5
        ax.axvline(x, color="#dc2626", linestyle="--", linewidth=1)
        ax.annotate(", ".join(sorted(set(g["field"]))), (x, 1.0), xycoords=("data", "axes "
                    "fraction"), fontsize=7, color="#dc2626", rotation=90, va="top", ha="right")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("run (in order)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="best")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _table(df: pd.DataFrame, columns: list[str]) -> str:
    if df.empty:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>"
                                    for c in columns) + "</tr>"
                   for r in df.to_dict("records"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _drawn(h: History, metric: str, failed: list[str]) -> str | None:
    """One metric's chart, or None and a sentence why: the page shows the rest."""
    try:
        return _chart(h, metric)
    except Exception as exc:  # the data come from files anyone could write
        reason = (str(exc).splitlines() or [""])[0][:200]
        failed.append(f"chart {metric} could not be drawn: {type(exc).__name__}: {reason}")
        return None


def history_html(h: History, title: str) -> str:
    metrics = list(dict.fromkeys(h.points["metric"])) if not h.points.empty else []
    failed: list[str] = []
    charts = [(m, _drawn(h, m, failed)) for m in metrics]
    parts = [f"<h1>{html.escape(title)}</h1>",
             "<p>One point per run and configuration (mean over its cycles, Student t "
             "interval). Red dashed lines mark runs whose provenance changed.</p>",
             "<h2>Runs</h2>", _table(h.runs, ["order", "run_id", "started_at", "results",
                                               "configurations"]),
             "<h2>What changed</h2>",
             _table(h.changes, ["run_before", "run_after", "field", "before", "after"]),
             "<h2>Changes between runs</h2>",
             _table(h.flags, ["config_name", "metric", "reference", "run", "n_reference",
                              "n_run", "diff_mean", "diff_ci_low", "diff_ci_high",
                              "rel_change", "flagged", "method", "note"])]
    parts += [f"<figure class='chart'><figcaption>{html.escape(m)}</figcaption>{svg}</figure>"
              for m, svg in charts if svg]
    parts += ["<h2>Points</h2>", _table(h.points, ["config_name", "metric", "order", "run_id",
                                                   "n", "mean", "ci_low", "ci_high",
                                                   "ci_method", "note"])]
    parts += [f"<p>{html.escape(f)}</p>" for f in failed]
    parts += [f"<p>unreadable: {html.escape(p.path)}: {html.escape(p.reason)}</p>"
              for p in h.problems]
    style = ("body{font-family:system-ui,sans-serif;margin:1.5rem}table{border-collapse:"
             "collapse}td,th{border:1px solid #cbd5e1;padding:.2rem .5rem;font-size:.85rem}")
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
