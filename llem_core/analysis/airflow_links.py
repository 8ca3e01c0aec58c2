"""Airflow UI pages the result pages link to (same origin, behind the same login)."""

from __future__ import annotations

from urllib.parse import quote

AIRFLOW_RUN_URL = "/dags/{dag_id}/runs/{run_id}"


def dag_run_url(dag_id: str, run_id: str) -> str:
    """The path of a DAG run's page in Airflow's UI, each part percent-encoded."""
    return AIRFLOW_RUN_URL.format(dag_id=quote(dag_id, safe=""), run_id=quote(run_id, safe=""))
