"""The Docker runner's experiment task: one fresh container per run (isolation container).

Kept apart from :mod:`llem_airflow.operators` because the Docker provider and client cost
~0.1 s to import, which every hosted or local experiment task would otherwise pay when it
parses its DAG file.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator

from llem_airflow.links import ResultJsonLink
from llem_airflow.operators import GPU_ORDER_ENV, HOST_ENV, ExperimentMixin, run_inputs
from llem_core import env_names
from llem_core.analysis.results import SPEC_ENV
from llem_core.campaign.planning import PlannedRun


class LlemDockerOperator(ExperimentMixin, DockerOperator):
    """A fresh container per experiment, no network, results folder mounted at its host path."""

    ui_color = "#dbeafe"
    operator_extra_links = (ResultJsonLink(),)
    # Campaign strings (image, mounts, environment) are data: nothing is rendered by Jinja.
    template_fields: Sequence[str] = ()

    def __init__(self, *, run: dict[str, Any], config_gap_s: float = 0.0, results_dir: str,
                 **kwargs: Any) -> None:
        kwargs.setdefault("network_mode", "none")
        kwargs.setdefault("auto_remove", "success")
        kwargs.setdefault("mount_tmp_dir", False)
        kwargs.setdefault("command", None)
        kwargs.setdefault("privileged", False)
        super().__init__(**kwargs)
        self.run = run
        self.config_gap_s = config_gap_s
        self.results_dir = results_dir

    def _launch(self, context: Any, run: PlannedRun) -> None:
        from llem_airflow.docker_settings import mount_objects, same_path_mounts

        Path(self.results_dir).mkdir(parents=True, exist_ok=True)
        self.environment = {**(self.environment or {}), SPEC_ENV: run.spec.model_dump_json(),
                            "HOME": "/tmp", env_names.IN_CONTAINER: "1",
                            env_names.PYTHONUNBUFFERED: "1",
                            HOST_ENV: socket.gethostname(), **GPU_ORDER_ENV}
        self.command = ["llem", "run-experiment", "--out", run.result_path]
        self.mounts = list(self.mounts or []) + mount_objects(
            same_path_mounts([self.results_dir], run_inputs(run)))
        DockerOperator.execute(self, context)
