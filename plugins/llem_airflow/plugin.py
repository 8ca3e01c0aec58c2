"""The Airflow plugin: an "LLM energy" page in the UI, and links from tasks to results.

A FastAPI app mounted at /llem by the api-server lists campaigns and their runs and
serves each run's report and result files. It only reads the results store (the
folders the campaigns write); it never touches Airflow's database.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse

from llem_airflow.links import URL_PREFIX, ReportLink, ResultJsonLink

app = FastAPI(title="llem: LLM energy results", docs_url=None, redoc_url=None)


def results_roots() -> dict[str, Path]:
    """campaign name -> its results folder, from the campaign files."""
    from llem_core.campaign_file import CampaignFileError, load_campaign

    folder = os.environ.get("LLEM_CAMPAIGNS_DIR")
    roots: dict[str, Path] = {}
    if not folder:
        return roots
    for path in sorted(Path(folder).glob("*.y*ml")):
        try:
            cfg = load_campaign(path).config
        except CampaignFileError:
            continue
        roots[cfg.campaign] = Path(cfg.results_dir) / cfg.campaign
    return roots


def _inside_results(path: str) -> Path:
    """Resolve a requested path and refuse anything outside a campaign's results folder."""
    p = Path(path).resolve()
    for root in results_roots().values():
        if p.is_relative_to(root.resolve()):
            return p
    raise HTTPException(status_code=404, detail="not a llem results path")


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>LLM energy</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#0f172a}}table{{border-collapse:
collapse}}td,th{{border:1px solid #cbd5e1;padding:.25rem .6rem}}th{{background:#f1f5f9}}
</style></head><body><h1>LLM energy campaigns</h1>{body}</body></html>"""


@app.get("/", response_class=HTMLResponse)
def index() -> str:
    rows = []
    for campaign, root in results_roots().items():
        runs = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime,
                      reverse=True) if root.is_dir() else []
        if not runs:
            rows.append(f"<tr><td>{html.escape(campaign)}</td><td colspan=4>no runs yet</td>"
                        "</tr>")
        for d in runs:
            n = len(list(d.rglob("cycle_*.json")))
            report = d / "report.html"
            link = (f"<a href='{URL_PREFIX}/report?run_dir={html.escape(str(d))}'>report</a>"
                    if report.exists() or n else "")
            csv = d / "summary.csv"
            csv_link = (f"<a href='{URL_PREFIX}/file?path={html.escape(str(csv))}'>summary.csv"
                        "</a>" if csv.exists() else "")
            rows.append(f"<tr><td>{html.escape(campaign)}</td><td>{html.escape(d.name)}</td>"
                        f"<td>{n}</td><td>{link}</td><td>{csv_link}</td></tr>")
    body = ("<table><thead><tr><th>campaign</th><th>run</th><th>results</th><th>report</th>"
            "<th>table</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            if rows else "<p>No campaigns found (is LLEM_CAMPAIGNS_DIR set?).</p>")
    return PAGE.format(body=body)


@app.get("/report", response_class=HTMLResponse)
def report(run_dir: str = Query(...)) -> HTMLResponse:
    d = _inside_results(run_dir)
    if not d.is_dir():
        raise HTTPException(status_code=404, detail="no such run")
    page = d / "report.html"
    if page.exists():
        return HTMLResponse(page.read_text(encoding="utf-8"))
    from llem_core.report import build_report

    return HTMLResponse(build_report(d))


@app.get("/file")
def file(path: str = Query(...)) -> FileResponse:
    p = _inside_results(path)
    if not p.is_file() or p.suffix not in (".json", ".csv", ".md", ".parquet", ".html"):
        raise HTTPException(status_code=404, detail="no such result file")
    return FileResponse(p)


class LlemAirflowPlugin(AirflowPlugin):
    name = "llem_airflow"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "LLM energy"}]
    external_views = [{"name": "LLM energy", "href": f"{URL_PREFIX}/", "destination": "nav",
                       "url_route": "llem", "category": "browse"}]
    operator_extra_links = [ResultJsonLink(), ReportLink()]
