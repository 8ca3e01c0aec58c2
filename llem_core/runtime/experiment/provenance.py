"""Where and with what an experiment ran: host, container, platform, library versions."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from llem_core.analysis.results import (
    EnergyResult,
    ExperimentResult,
    Metrics,
    Provenance,
    RunSpec,
    ServingMetrics,
)
from llem_core.env_names import HOST_NAME, IN_CONTAINER

# The server's name (env_names.HOST_NAME), passed by the Airflow operators: inside Docker
# the hostname is the container id, which says nothing about which server measured.


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def host_identity(environ: Mapping[str, str] = os.environ,
                  hostname: Callable[[], str] = socket.gethostname) -> tuple[str, str | None]:
    """(host, container_id): the server from $LLEM_HOST_NAME, else this hostname; the
    process's own hostname as well when it differs (in Docker: the container id)."""
    own = hostname()
    host = environ.get(HOST_NAME, "").strip() or own
    return host, own if own != host else None


def provenance(device: str, hardware: dict[str, Any], libraries: dict[str, str | None],
               started_at: str, timings_s: dict[str, float],
               isolation: str | None = None) -> Provenance:
    """``isolation``: the run's (``RunSpec.isolation``), None outside Airflow."""
    host, container_id = host_identity()
    return Provenance(
        llem_version=version("llem-airflow") or "unknown", host=host,
        container_id=container_id, platform=platform.platform(),
        python=sys.version.split()[0],
        libraries={**libraries, "nvidia-ml-py": version("nvidia-ml-py")},
        device=device, hardware=hardware, started_at=started_at, finished_at=now(),
        timings_s=timings_s, isolation=isolation,
        # Set by the experiment image and the Docker runner (/.dockerenv is unreliable:
        # the worker itself may run in a container).
        in_container=os.environ.get(IN_CONTAINER) == "1")


def experiment_result(spec: RunSpec, metrics: Metrics, energy: EnergyResult,
                      prov: Provenance, health: dict[str, Any] | None, warnings: list[str],
                      serving: ServingMetrics | None = None) -> ExperimentResult:
    """The record of one experiment of either pipeline (in-process or served): the run's
    identity from its spec, what was measured, and where."""
    return ExperimentResult(
        campaign=spec.campaign, run_id=spec.run_id, name=spec.name,
        config_hash=spec.config_hash, cycle=spec.cycle, position=spec.position,
        config=spec.config, metrics=metrics, energy=energy, provenance=prov, health=health,
        warnings=warnings, serving=serving)
