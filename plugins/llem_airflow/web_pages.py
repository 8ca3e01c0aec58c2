"""HTML of the results pages. Every value shown is escaped, attributes included.

Folder names, configuration names, notes and reasons come from files that any experiment
container can write, so they are untrusted: text goes through ``esc`` (which also
escapes quotes) and URLs are built from a fixed path with percent-encoded parameters.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

from llem_airflow.results_view import HEADLINE, Campaign, Row, RunSummary
from llem_core import env_names
from llem_core.analysis import metrics as registry
from llem_core.analysis.airflow_links import dag_run_url
from llem_core.analysis.console_table import number

URL_PREFIX = "/llem"
MAX_RUNS_SHOWN = 20

# Served with every page: no script runs whatever a file holds; inline SVG and CSS only.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'self'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin"}

CSS = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#0f172a}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #cbd5e1;
padding:.25rem .6rem;text-align:left}th{background:#f1f5f9}td.num{text-align:right;
font-variant-numeric:tabular-nums}.problem{color:#b91c1c}.muted{color:#64748b}
.unpub{color:#b45309;font-weight:600}.best{color:#15803d;font-weight:600}
tr.unpublishable td{background:#fffbeb}figure{margin:.5rem 0 1rem}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.charts svg{max-width:100%;height:auto}
.defs{font-size:.85rem;color:#334155;max-width:60rem}"""



def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def url(route: str, **params: str) -> str:
    """A link to a route of the plugin app; parameters percent-encoded."""
    return f"{URL_PREFIX}/{route}" + (f"?{urlencode(params)}" if params else "")


def link(route: str, text: str, **params: str) -> str:
    return f'<a href="{esc(url(route, **params))}">{esc(text)}</a>'


def page(title: str, body: str) -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>")


def _count(x: int | None) -> str:
    return "?" if x is None else str(x)


def dag_run_link(dag_id: str | None, run_id: str | None) -> str:
    """A link to the DAG run's page in Airflow's UI (the whole window, not the tab)."""
    if not dag_id or not run_id:
        return ""
    href = esc(dag_run_url(dag_id, run_id))
    return f'<a href="{href}" target="_top">DAG run {esc(run_id)} in Airflow</a>'


def counts_line(s: RunSummary) -> str:
    if not s.aggregated:
        return (f"<p>Not aggregated yet: {s.result_files} result file(s) so far"
                + (f" of {s.planned} planned" if s.planned is not None else "") + ".</p>")
    return (f"<p>planned <b>{_count(s.planned)}</b> · measured <b>{_count(s.measured)}</b>"
            f" · failed or missing <b>{_count(s.failed)}</b></p>")


def _best(s: RunSummary) -> dict[str, str]:
    """Per headline metric, the publishable configuration with the best estimate (the
    one the charts star too)."""
    from llem_core.analysis.report_charts import best_of

    frame = summary_frame(s)
    return {key: best for key, _ in HEADLINE if (best := best_of(frame, key))}


def _cell(s: RunSummary, r: Row, key: str, best: dict[str, str]) -> str:
    c = r.cells.get(key)
    _, factor = registry.display_unit(key)
    if c is None or c.mean is None:
        why = s.energy_missing.get(r.config) if key.startswith(("j_", "energy_")) else None
        return (f"<td class='num muted' title='{esc(why)}'>— no energy: {esc(why)}</td>"
                if why else "<td class='num'>—</td>")
    interval = "" if c.ci_low is None or c.ci_high is None else \
        f" [{number(c.ci_low * factor)}, {number(c.ci_high * factor)}]"
    star = "<span class='best' title='best publishable estimate'>★ </span>" \
        if best.get(key) == r.config else ""
    mark = "<sup title='see the caveats below'>*</sup>" if c.note else ""
    return (f"<td class='num' title='{esc(c.estimator or 'estimate')}, {esc(c.method)}'>"
            f"{star}{esc(number(c.mean * factor))}{esc(interval)}{mark}</td>")


def headline_table(s: RunSummary) -> str:
    if not s.rows:
        return "" if not s.aggregated else "<p class='muted'>No configuration measured.</p>"
    head = "".join(f"<th>{esc(registry.axis_label(key))}</th>" for key, _ in HEADLINE)
    best = _best(s)
    body, caveats = [], {}
    for r in s.rows:
        n = esc(_count(r.n)) + ("" if r.publishable else
                                " <span class='unpub'>NOT PUBLISHABLE</span>")
        body.append(f"<tr class='{'' if r.publishable else 'unpublishable'}'>"
                    f"<td>{esc(r.config)}</td><td class='num'>{n}</td>"
                    + "".join(_cell(s, r, key, best) for key, _ in HEADLINE) + "</tr>")
        for key, _ in HEADLINE:
            c = r.cells.get(key)
            if c is not None and c.note:
                caveats.setdefault(f"{r.config}: {c.note}", None)
    methods = sorted({c.method for r in s.rows for c in r.cells.values() if c.method})
    notes = "".join(f"<li>{esc(c)}</li>" for c in caveats)
    return (f"<table><thead><tr><th>configuration</th><th>n (cycles)</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table><p class='muted'>estimate "
            f"[{s.confidence:.0%} CI low, high] ({esc(', '.join(methods) or 'no interval')});"
            " ★ best publishable estimate; fewer than 3 cycles is not publishable</p>"
            + (f"<details><summary>Caveats (*)</summary><ul>{notes}</ul></details>"
               if notes else ""))


DEFINITIONS = (
    "<details class='defs'><summary>Definitions</summary><ul>"
    "<li>Throughput, raw energy and latencies: geometric mean of the cycles with a log-t "
    "interval (never below zero); energy above idle: arithmetic mean with a t interval "
    "(it can be negative when the idle baseline exceeds the measured power).</li>"
    "<li>Energy per token, raw: the window's GPU energy per output token without idle "
    "subtraction, the figure comparable with the ML.ENERGY leaderboard.</li>"
    "<li>Serving loads: throughput covers the whole load, energy per token the "
    "steady-state window.</li></ul></details>")


def summary_frame(s: RunSummary) -> Any:
    """The run's headline rows as the chart functions read them (one row per metric)."""
    import pandas as pd

    rows = [{"config_label": r.config, "metric": key, "mean": c.mean, "ci_low": c.ci_low,
             "ci_high": c.ci_high, "publishable": r.publishable and c.publishable,
             "estimator": c.estimator or "estimate", "confidence": s.confidence}
            for r in s.rows for key, c in r.cells.items() if c.mean is not None]
    return pd.DataFrame(rows, columns=["config_label", "metric", "mean", "ci_low", "ci_high",
                                       "publishable", "estimator", "confidence"])


def charts(s: RunSummary) -> str:
    """Energy per token against throughput (Pareto front) and per-metric bars, drawn from
    the aggregate's table; a chart that cannot be drawn says why."""
    if not s.rows:
        return ""
    from llem_core.analysis.report_charts import bar_chart, scatter_chart

    frame = summary_frame(s)
    figures, problems = [], []
    try:
        svg, _ = scatter_chart(frame, "j_per_token_raw", "tokens_per_s", True,
                               "Energy per token vs throughput")
        if svg:
            figures.append(svg)
        else:
            problems.append("energy per token vs throughput: no energy was measured")
        for key, _ in HEADLINE:
            if key != "j_per_token_raw" and (svg := bar_chart(frame, key)):
                figures.append(svg)
    except Exception as exc:  # the data come from a file any experiment could write
        problems.append(f"charts could not be drawn: {type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0][:200]}")
    body = "".join(f"<figure>{svg}</figure>" for svg in figures)
    return (f"<div class='charts'>{body}</div>"
            + "".join(f"<p class='muted'>{esc(p)}</p>" for p in problems))


def change_points_section(s: RunSummary) -> str:
    if not s.change_points_searched:
        return ""
    if not s.change_points:
        return "<p class='muted'>This run brought no change point.</p>"
    from llem_core.analysis.regression import change_size  # scipy: only on this page

    items = []
    for c in s.change_points:
        size = change_size(c.rel_change, c.rel_low, c.rel_high)
        cause = f"; likely cause: {', '.join(c.causes)}" if c.causes else ""
        items.append(f"<li><b>{esc(c.config)}</b> {esc(registry.short_label(c.metric))}: "
                     f"{esc(size)} from run {esc(c.run_id)} on "
                     f"(p = {esc(number(c.p_value) if c.p_value is not None else '—')})"
                     f"{esc(cause)}</li>")
    return f"<h2 class='problem'>New change points</h2><ul>{''.join(items)}</ul>"


def _list(title: str, items: list[str], cls: str = "") -> str:
    if not items:
        return ""
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    return f"<h3>{esc(title)}</h3><ul class='{cls}'>{lis}</ul>"


def _file_links(s: RunSummary) -> str:
    """Links to the summary files that are regular files (no link, no FIFO)."""
    return " · ".join(link("file", n, path=str(s.path / n)) for n in s.files)


def run_section(s: RunSummary, heading: str = "h2", dag_id: str | None = None,
                with_charts: bool = False) -> str:
    links = [link("run", "details", run_dir=str(s.path)),
             link("report", "full report", run_dir=str(s.path))]
    back = dag_run_link(dag_id, s.run_id)
    links += [back] if back else []
    files = _file_links(s)
    energy = _list("Why energy is missing", [f"{name}: {why}" for name, why
                                             in s.energy_missing.items()], "muted")
    return (f"<{heading}>{esc(s.path.name)}</{heading}>{counts_line(s)}"
            f"{change_points_section(s)}{headline_table(s)}"
            f"{charts(s) if with_charts else ''}{energy}"
            f"<p>{' · '.join(links)}{' · ' + files if files else ''}</p>"
            + _list("Problems", s.problems, "problem"))


def run_page(campaign: str, s: RunSummary, dag_id: str | None = None) -> str:
    back = dag_run_link(dag_id, s.run_id)
    full = link("report", "Full report (every metric, comparisons, drift)", run_dir=str(s.path))
    body = (f"<p>{link('', 'All campaigns')}{' · ' + back if back else ''}</p>"
            f"<h1>{esc(campaign)}: run {esc(s.path.name)}</h1>{counts_line(s)}"
            f"{change_points_section(s)}{headline_table(s)}{charts(s)}{DEFINITIONS}"
            f"<p>{full}</p><p>{_file_links(s)}</p>"
            + _list("Failed or missing runs", s.missing, "problem")
            + _list("Problems", s.problems, "problem") + _list("Notes", s.notes))
    return page(f"llem: {campaign} {s.path.name}", body)


def _index_intro() -> str:
    return ("<h1>LLM energy campaigns</h1><p class='muted'>The newest run of each campaign "
            "with its charts; older runs as tables. Estimates with 95 % intervals; latencies "
            "in ms.</p>" + DEFINITIONS)


def no_run_page(campaign: str, run_id: str, reason: str) -> str:
    return page("llem: no results", f"<p>{link('', 'All campaigns')}</p><h1>{esc(campaign)}"
                f"</h1><p>No results for run {esc(run_id)}: {esc(reason)}</p>")


def _overview(c: Campaign, summaries: list[RunSummary]) -> str:
    """One row per run: counts and links (the headline tables follow)."""
    rows = []
    for s in summaries:
        counts = ([_count(s.planned), _count(s.measured), _count(s.failed)] if s.aggregated
                  else [_count(s.planned), f"{s.result_files} so far", "not aggregated yet"])
        links = " · ".join([link("run", "details", run_dir=str(s.path)),
                            link("report", "report", run_dir=str(s.path))])
        rows.append(f"<tr><td>{esc(c.name)}</td><td>{esc(s.path.name)}</td>"
                    + "".join(f"<td class='num'>{esc(x)}</td>" for x in counts)
                    + f"<td>{links}</td></tr>")
    return ("<table><thead><tr><th>campaign</th><th>run</th><th>planned</th><th>measured</th>"
            "<th>failed or missing</th><th>pages</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def index_page(listing: list[tuple[Campaign, list[RunSummary], int]]) -> str:
    """``listing``: per campaign, the newest runs' summaries and how many runs it has."""
    if not listing:
        return page("LLM energy", "<h1>LLM energy campaigns</h1><p>No campaigns found (is "
                    f"{env_names.CAMPAIGNS_DIR} set?).</p>")
    parts = [_index_intro()]
    for c, summaries, total in listing:
        parts.append(f"<h2>{esc(c.name)} <span class='muted'>(DAG {esc(c.dag_id)})</span></h2>")
        if summaries:
            parts.append(f"<p>{link('history', 'history across runs', campaign=c.name)}</p>")
        if not summaries:
            parts.append("<p class='muted'>No runs yet.</p>")
            continue
        parts.append(_overview(c, summaries))
        if total > len(summaries):
            parts.append(f"<p class='muted'>{total - len(summaries)} older run(s) not shown."
                         "</p>")
        parts += [run_section(s, "h3", c.dag_id, with_charts=i == 0)
                  for i, s in enumerate(summaries)]
    return page("LLM energy", "".join(parts))
