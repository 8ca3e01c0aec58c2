"""The Airflow plugin: an "LLM energy" page in the UI, a tab on each DAG run, task links.

A FastAPI app mounted at /llem by the api-server lists campaigns and their runs (counts
and headline table per run) and serves each run's report and result files. It reads only
the results store; Airflow's database is used by the auth check alone.

Every route sits behind Airflow's own authentication and authorisation: the router-level
dependency ``requires_access_dag("GET")`` of the api-server (a JWT bearer token or the
UI's ``_token`` cookie, checked by the configured auth manager; DAG read access, and
access to that very DAG where the request names a ``dag_id``). Within that, a user sees
only the campaigns whose DAG the auth manager lets them read.

Result files are written by experiments, so the results tree is untrusted input: every
file is read through :mod:`llem_core.analysis.untrusted_files` from the campaign's
``results_dir`` (no link below it followed, regular files only, size-capped, nothing
that can block a request), and nothing from it is served as active HTML: JSON is
``application/json``, other files are downloads, and the report is rendered from the
data on each request (a ``report.html`` in a run folder is never served: anyone could
have written it) under a CSP that runs no script.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, StreamingResponse

from llem_airflow import web_pages
from llem_airflow.links import URL_PREFIX, ReportLink, ResultJsonLink
from llem_airflow.page_cache import PageCache
from llem_airflow.results_view import Campaign, campaigns, read_summary, run_folders
from llem_airflow.web_pages import SECURITY_HEADERS
from llem_core.analysis import untrusted_files as untrusted
from llem_core.analysis.results import safe_part

app = FastAPI(title="llem: LLM energy results", docs_url=None, redoc_url=None,
              openapi_url=None, dependencies=[Depends(requires_access_dag("GET"))])

DOWNLOADS = {".csv": "text/csv", ".md": "text/markdown", ".parquet": "application/octet-stream"}
# Rendered report and history pages, by a digest of the files they are rendered from
# (page_cache.py: what the key holds, why a page is never stale). A route that passes
# another argument to its page puts it in the key too.
PAGE_CACHE = PageCache()


def _html(text: str, status_code: int = 200) -> HTMLResponse:
    # errors="replace": a lone surrogate from a file name or value never fails the page
    return HTMLResponse(text.encode("utf-8", errors="replace"), status_code=status_code,
                        headers=SECURITY_HEADERS)


def readable_campaigns(user: GetUserDep) -> list[Campaign]:
    """The campaigns whose DAG the user may read (per-DAG permissions of the auth manager)."""
    found = campaigns()
    allowed = get_auth_manager().filter_authorized_dag_ids(
        dag_ids={c.dag_id for c in found}, user=user, method="GET")
    return [c for c in found if c.dag_id in allowed]


Readable = Annotated[list[Campaign], Depends(readable_campaigns)]


def _under(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` ('' for the root itself), or None if not inside."""
    if path == root:
        return ""
    return path[len(root):].lstrip("/") if path.startswith(root.rstrip("/") + "/") else None


def _inside_results(path: str, readable: list[Campaign]) -> tuple[Campaign, Path]:
    """The campaign holding ``path``, among the readable ones, and the path as it lies
    under the campaign's results_dir.

    Decided on the text of the path (``..`` resolved as text), never by following links:
    what is then opened is opened from results_dir without following any link below it.
    ``path`` may also start with results_dir as this machine resolves it.
    """
    if "\x00" in path or not path.startswith("/"):
        raise HTTPException(status_code=404, detail="not a llem results path")
    p = posixpath.normpath(path)
    for c in readable:
        for top in dict.fromkeys((str(c.results_dir), os.path.realpath(c.results_dir))):
            rest = _under(p, posixpath.join(posixpath.normpath(top), safe_part(c.name)))
            if rest is not None:
                return c, c.root / rest if rest else c.root
    # the same answer for "elsewhere" and "a campaign you may not read"
    raise HTTPException(status_code=404, detail="not a llem results path")


def _run_folder(c: Campaign, d: Path) -> str | None:
    """Why ``d`` is not a run folder to show (None: it is one)."""
    try:
        c.open(d).close()
    except FileNotFoundError:
        return "no result written yet"
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


@app.get("/", response_class=HTMLResponse)
def index(readable: Readable) -> HTMLResponse:
    listing = []
    for c in readable:
        runs = run_folders(c)
        listing.append((c, [read_summary(d, c.results_dir)
                            for d in runs[:web_pages.MAX_RUNS_SHOWN]], len(runs)))
    return _html(web_pages.index_page(listing))


@app.get("/run", response_class=HTMLResponse)
def run(readable: Readable, run_dir: str = Query(...)) -> HTMLResponse:
    c, d = _inside_results(run_dir, readable)
    problem = _run_folder(c, d)
    if problem:
        raise HTTPException(status_code=404, detail=f"no such run: {problem}")
    return _html(web_pages.run_page(c.name, read_summary(d, c.results_dir), c.dag_id))


@app.get("/dag-run", response_class=HTMLResponse)
def dag_run(readable: Readable, dag_id: str = Query(...),
            run_id: str = Query(...)) -> HTMLResponse:
    """The DAG run's tab: the run folder of the campaign behind ``dag_id``."""
    c = next((c for c in readable if c.dag_id == dag_id), None)
    if c is None:
        return _html(web_pages.no_run_page(dag_id, run_id, "no campaign file defines this "
                                           "DAG (or it is invalid)"), status_code=404)
    folder = c.run_folder(run_id)
    problem = _run_folder(c, folder)
    if problem:
        return _html(web_pages.no_run_page(c.name, run_id, problem))
    return _html(web_pages.run_page(c.name, read_summary(folder, c.results_dir), c.dag_id))


@app.get("/history", response_class=HTMLResponse)
def campaign_history(readable: Readable, campaign: str = Query(...)) -> HTMLResponse:
    """Every configuration of one campaign across its runs (as ``llem history``)."""
    c = next((c for c in readable if c.name == campaign), None)
    if c is None:
        raise HTTPException(status_code=404, detail="no such campaign")
    problem = _run_folder(c, c.root)
    if problem:
        return _html(web_pages.no_run_page(c.name, "-", problem))
    try:
        return _html(PAGE_CACHE.page(("history", c.name, c.dag_id), c.root, c.results_dir,
                                     lambda: _history_page(c)))
    except _NoResults:
        return _html(web_pages.no_run_page(c.name, "-", "no result written yet"))
    except Exception as exc:  # the data come from files anyone could write
        return _html(web_pages.no_run_page(c.name, "-", _failure(exc)), status_code=500)


class _NoResults(Exception):
    """A campaign folder without results: that page is not kept."""


def _history_page(c: Campaign) -> str:
    from llem_core.analysis.history import history
    from llem_core.analysis.history_report import history_html

    h = history(c.root, trusted=c.results_dir, campaign=c.name)
    if h.runs.empty:
        raise _NoResults
    return history_html(h, f"History of {c.name}", c.dag_id)


def _failure(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0][:300]
    return f"the page could not be built from the results ({type(exc).__name__}: {first})"


@app.get("/report", response_class=HTMLResponse)
def report(readable: Readable, run_dir: str = Query(...)) -> HTMLResponse:
    c, d = _inside_results(run_dir, readable)
    problem = _run_folder(c, d)
    if problem:
        raise HTTPException(status_code=404, detail=f"no such run: {problem}")
    from llem_core.analysis.report import build_report

    # Rendered from the data: a report.html in the folder could have been written by any
    # experiment (a digest of it in aggregate.json proves nothing: same folder).
    try:
        return _html(PAGE_CACHE.page(("report", c.name, c.dag_id), d, c.results_dir,
                                     lambda: build_report(d, trusted=c.results_dir)))
    except Exception as exc:  # the data come from files anyone could write
        return _html(web_pages.no_run_page(c.name, d.name, _failure(exc)), status_code=500)


@app.get("/file")
def file(readable: Readable, path: str = Query(...)) -> StreamingResponse:
    """A result file: JSON as application/json, anything else as a download.

    Opened from the campaign's results_dir without following links, a regular file only;
    the descriptor that was checked is the one streamed, as far as its size when opened.
    """
    c, p = _inside_results(path, readable)
    if p.suffix not in (".json", *DOWNLOADS):
        raise HTTPException(status_code=404, detail="no such result file")
    try:
        with c.open() as root:
            fd, st = untrusted.open_file(root, p.relative_to(c.root),
                                         untrusted.MAX_DOWNLOAD_BYTES)
    except (OSError, ValueError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else str(exc)
        raise HTTPException(status_code=404, detail=f"no such result file: {reason}") from None
    body = untrusted.iter_fd(fd, st.st_size)
    if p.suffix == ".json":
        return StreamingResponse(body, media_type="application/json", headers=SECURITY_HEADERS)
    name = safe_part(p.name)  # a header value: no quote, no line break, ASCII
    return StreamingResponse(body, media_type=DOWNLOADS[p.suffix], headers={
        **SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})


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
