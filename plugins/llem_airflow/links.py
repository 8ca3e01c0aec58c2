"""Extra links from a task to its result: the api-server reads them from XCom."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from llem_airflow.web_pages import URL_PREFIX

__all__ = ["URL_PREFIX", "ReportLink", "ResultJsonLink", "report_url", "result_url"]


def result_url(result_path: str) -> str:
    return f"{URL_PREFIX}/file?path={quote(result_path)}"


def report_url(run_dir: str) -> str:
    return f"{URL_PREFIX}/report?run_dir={quote(run_dir)}"


# Airflow 3 calls get_link on the worker when the task finishes and stores the URL in
# XCom under xcom_key; the api-server serves it from there. The operator instance is the
# one that ran, so it still knows its run.


class ResultJsonLink(BaseOperatorLink):
    """Experiment task -> its result JSON (served by the llem plugin app)."""

    name = "Result JSON"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        run = getattr(operator, "run", None)
        return result_url(run["result_path"]) if isinstance(run, dict) else ""


class ReportLink(BaseOperatorLink):
    """Aggregate task -> the run's HTML report."""

    name = "Campaign report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        run_dir = getattr(operator, "report_run_dir", None)
        return report_url(run_dir) if run_dir else ""
