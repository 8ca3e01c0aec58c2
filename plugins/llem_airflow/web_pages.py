"""HTML of the results pages. Every value shown is escaped, attributes included.

Folder names, configuration names, notes and reasons come from files that any experiment
container can write, so they are untrusted: text goes through ``esc`` (which also
escapes quotes) and URLs are built from a fixed path with percent-encoded parameters.
"""

from __future__ import annotations

import html
from urllib.parse import urlencode

from llem_airflow.results_view import HEADLINE, Campaign, RunSummary

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
font-variant-numeric:tabular-nums}.problem{color:#b91c1c}.muted{color:#64748b}"""


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


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _count(x: int | None) -> str:
    return "?" if x is None else str(x)


def counts_line(s: RunSummary) -> str:
    if not s.aggregated:
        return (f"<p>Not aggregated yet: {s.result_files} result file(s) so far"
                + (f" of {s.planned} planned" if s.planned is not None else "") + ".</p>")
    return (f"<p>planned <b>{_count(s.planned)}</b> · measured <b>{_count(s.measured)}</b>"
            f" · failed or missing <b>{_count(s.failed)}</b></p>")


def headline_table(s: RunSummary) -> str:
    if not s.rows:
        return "" if not s.aggregated else "<p class='muted'>No configuration measured.</p>"
    head = "".join(f"<th>{esc(title)}</th>" for _, title in HEADLINE)
    body = []
    for r in s.rows:
        cells = []
        for key, _ in HEADLINE:
            c = r.cells.get(key)
            if c is None or c.mean is None:
                cells.append("<td class='num'>—</td>")
                continue
            cells.append(f"<td class='num' title='{esc(c.method)}'>{esc(_fmt(c.mean))} "
                         f"[{esc(_fmt(c.ci_low))}, {esc(_fmt(c.ci_high))}]</td>")
        body.append(f"<tr><td>{esc(r.config)}</td><td class='num'>{esc(_count(r.n))}</td>"
                    + "".join(cells) + "</tr>")
    return (f"<table><thead><tr><th>configuration</th><th>n</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table><p class='muted'>mean [CI low, CI high]"
            "</p>")


def _list(title: str, items: list[str], cls: str = "") -> str:
    if not items:
        return ""
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    return f"<h3>{esc(title)}</h3><ul class='{cls}'>{lis}</ul>"


def _file_links(s: RunSummary) -> str:
    """Links to the summary files that are regular files (no link, no FIFO)."""
    return " · ".join(link("file", n, path=str(s.path / n)) for n in s.files)


def run_section(s: RunSummary, heading: str = "h2") -> str:
    links = [link("run", "details", run_dir=str(s.path)),
             link("report", "full report", run_dir=str(s.path))]
    files = _file_links(s)
    return (f"<{heading}>{esc(s.path.name)}</{heading}>{counts_line(s)}{headline_table(s)}"
            f"<p>{' · '.join(links)}{' · ' + files if files else ''}</p>"
            + _list("Problems", s.problems, "problem"))


def run_page(campaign: str, s: RunSummary) -> str:
    body = (f"<p>{link('', 'All campaigns')}</p><h1>{esc(campaign)}: run "
            f"{esc(s.path.name)}</h1>{counts_line(s)}{headline_table(s)}"
            f"<p>{link('report', 'Full report (charts, every metric)', run_dir=str(s.path))}"
            f"</p><p>{_file_links(s)}</p>"
            + _list("Failed or missing runs", s.missing, "problem")
            + _list("Problems", s.problems, "problem") + _list("Notes", s.notes))
    return page(f"llem: {campaign} {s.path.name}", body)


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
                    "LLEM_CAMPAIGNS_DIR set?).</p>")
    parts = ["<h1>LLM energy campaigns</h1>"]
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
        parts += [run_section(s, "h3") for s in summaries]
    return page("LLM energy", "".join(parts))
