"""Airflow's simple auth manager with one per-DAG rule, as FAB roles can grant.

The simple auth manager's roles are global; FAB's can be per DAG. This subclass keeps
every check of the simple one and lets only admins read the DAG ``llem_secret``, so the
plugin's per-campaign filtering can be tested without the FAB provider installed.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

SECRET_DAG = "llem_secret"


class PerDagAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None,
                          details: Any = None) -> bool:
        if details is not None and details.id == SECRET_DAG and user.role != "admin":
            return False
        return super().is_authorized_dag(method=method, user=user,
                                         access_entity=access_entity, details=details)
