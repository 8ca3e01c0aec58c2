"""Airflow DAG file: one llem DAG per campaigns/*.yaml (folder: $LLEM_CAMPAIGNS_DIR).

Kept tiny on purpose; the factory lives in the llem_airflow package.
"""

from llem_airflow.factory import register_dags

register_dags(globals())
