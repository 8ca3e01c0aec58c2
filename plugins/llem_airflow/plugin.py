"""The Airflow plugin: an "LLM energy" page in the UI, a tab on each DAG run, task links.

A FastAPI app mounted at /llem by the api-server lists campaigns and their runs (counts
and headline table per run) and serves each run's report and result files. It reads only
the results store; Airflow's database is used by the auth check alone.

Every route sits behind Airflow's own authentication and authorisation: the router-level
dependency ``requires_access_dag("GET")`` of the api-server (a JWT bearer token or the
UI's ``_token`` cookie, checked by the configured auth manager; DAG read access, and
access to that very DAG where the request names a ``dag_id``). Within that, a user sees
only the campaigns whose DAG the auth manager lets them read. Result files are written
by experiment containers, so nothing from them is served as active HTML: JSON is
``application/json``, other files are downloads, and the reports carry a CSP that runs
no script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse

from llem_airflow import web_pages
from llem_airflow.links import URL_PREFIX, ReportLink, ResultJsonLink
from llem_airflow.results_view import Campaign, campaigns, read_summary, run_folders
from llem_airflow.web_pages import SECURITY_HEADERS

app = FastAPI(title="llem: LLM energy results", docs_url=None, redoc_url=None,
              openapi_url=None, dependencies=[Depends(requires_access_dag("GET"))])

DOWNLOADS = {".csv": "text/csv", ".md": "text/markdown", ".parquet": "application/octet-stream"}


def _html(text: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status_code, headers=SECURITY_HEADERS)


def readable_campaigns(user: GetUserDep) -> list[Campaign]:
    """The campaigns whose DAG the user may read (per-DAG permissions of the auth manager)."""
    found = campaigns()
    allowed = get_auth_manager().filter_authorized_dag_ids(
        dag_ids={c.dag_id for c in found}, user=user, method="GET")
    return [c for c in found if c.dag_id in allowed]


Readable = Annotated[list[Campaign], Depends(readable_campaigns)]


def _inside_results(path: str, readable: list[Campaign]) -> tuple[Campaign, Path]:
    """The campaign holding ``path`` (resolved, links followed), among the readable ones."""
    try:
        p = Path(path).resolve()
    except (OSError, ValueError):  # a NUL byte, a loop of links, a name too long
        raise HTTPException(status_code=404, detail="not a llem results path") from None
    for c in readable:
        if p.is_relative_to(c.root.resolve()):
            return c, p
    # the same answer for "elsewhere" and "a campaign you may not read"
    raise HTTPException(status_code=404, detail="not a llem results path")


@app.get("/", response_class=HTMLResponse)
def index(readable: Readable) -> HTMLResponse:
    listing = []
    for c in readable:
        runs = run_folders(c)
        listing.append((c, [read_summary(d) for d in runs[:web_pages.MAX_RUNS_SHOWN]],
                        len(runs)))
    return _html(web_pages.index_page(listing))


@app.get("/run", response_class=HTMLResponse)
def run(readable: Readable, run_dir: str = Query(...)) -> HTMLResponse:
    c, d = _inside_results(run_dir, readable)
    if not d.is_dir():
        raise HTTPException(status_code=404, detail="no such run")
    return _html(web_pages.run_page(c.name, read_summary(d)))


@app.get("/dag-run", response_class=HTMLResponse)
def dag_run(readable: Readable, dag_id: str = Query(...),
            run_id: str = Query(...)) -> HTMLResponse:
    """The DAG run's tab: the run folder of the campaign behind ``dag_id``."""
    c = next((c for c in readable if c.dag_id == dag_id), None)
    if c is None:
        return _html(web_pages.no_run_page(dag_id, run_id, "no campaign file defines this "
                                           "DAG (or it is invalid)"), status_code=404)
    folder = c.run_folder(run_id)
    if not folder.is_dir():
        return _html(web_pages.no_run_page(c.name, run_id, "no result written yet"))
    return _html(web_pages.run_page(c.name, read_summary(folder)))


@app.get("/history", response_class=HTMLResponse)
def campaign_history(readable: Readable, campaign: str = Query(...)) -> HTMLResponse:
    """Every configuration of one campaign across its runs (as ``llem history``)."""
    from llem_core.history import history
    from llem_core.history_report import history_html

    c = next((c for c in readable if c.name == campaign), None)
    if c is None:
        raise HTTPException(status_code=404, detail="no such campaign")
    h = history(c.root) if c.root.is_dir() else None
    if h is None or h.runs.empty:
        return _html(web_pages.no_run_page(c.name, "-", "no result written yet"))
    return _html(history_html(h, f"History of {c.name}"))


@app.get("/report", response_class=HTMLResponse)
def report(readable: Readable, run_dir: str = Query(...)) -> HTMLResponse:
    _, d = _inside_results(run_dir, readable)
    if not d.is_dir():
        raise HTTPException(status_code=404, detail="no such run")
    page = d / "report.html"
    if page.is_file():
        return _html(page.read_text(encoding="utf-8", errors="replace"))
    from llem_core.report import build_report

    return _html(build_report(d))


@app.get("/file")
def file(readable: Readable, path: str = Query(...)) -> FileResponse:
    """A result file: JSON as application/json, anything else as a download."""
    _, p = _inside_results(path, readable)
    if not p.is_file() or p.suffix not in (".json", *DOWNLOADS):
        raise HTTPException(status_code=404, detail="no such result file")
    if p.suffix == ".json":
        return FileResponse(p, media_type="application/json", headers=SECURITY_HEADERS)
    return FileResponse(p, media_type=DOWNLOADS[p.suffix], filename=p.name,
                        content_disposition_type="attachment", headers=SECURITY_HEADERS)


class LlemAirflowPlugin(AirflowPlugin):
    name = "llem_airflow"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "LLM energy"}]
    # The UI fills {DAG_ID} and {RUN_ID} (URL-encoded) in hrefs of non-nav views and shows
    # the page in a tab of the DAG run (url_route names the tab).
    external_views = [
        {"name": "LLM energy", "href": f"{URL_PREFIX}/", "destination": "nav",
         "url_route": "llem", "category": "browse"},
        {"name": "LLM energy report", "href": f"{URL_PREFIX}/dag-run?dag_id={{DAG_ID}}"
         "&run_id={RUN_ID}", "destination": "dag_run", "url_route": "llem-run"},
    ]
    operator_extra_links = [ResultJsonLink(), ReportLink()]
