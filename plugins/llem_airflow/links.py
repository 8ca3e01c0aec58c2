"""Extra links from a task to its result: the api-server reads them from XCom."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

URL_PREFIX = "/llem"


def result_url(result_path: str) -> str:
    return f"{URL_PREFIX}/file?path={result_path}"


def report_url(run_dir: str) -> str:
    return f"{URL_PREFIX}/report?run_dir={run_dir}"


class ResultJsonLink(BaseOperatorLink):
    """Experiment task -> its result JSON (served by the llem plugin app)."""

    name = "Result JSON"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        # Airflow 3's api-server resolves links from the XCom under xcom_key, which the
        # operator pushes when it finishes; this method is not called there.
        return ""


class ReportLink(BaseOperatorLink):
    """Aggregate task -> the run's HTML report."""

    name = "Campaign report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return ""
