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

from llem_core.results import Provenance

# The server's name, passed by the Airflow operators: inside Docker the hostname is the
# container id, which says nothing about which server measured.
HOST_ENV = "LLEM_HOST_NAME"


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
    host = environ.get(HOST_ENV, "").strip() or own
    return host, own if own != host else None


ISOLATION_ENV = "LLEM_ISOLATION"  # set by the runners and the experiment host


def provenance(device: str, hardware: dict[str, Any], libraries: dict[str, str | None],
               started_at: str, timings_s: dict[str, float]) -> Provenance:
    host, container_id = host_identity()
    return Provenance(
        llem_version=version("llem-airflow") or "unknown", host=host,
        container_id=container_id, platform=platform.platform(),
        python=sys.version.split()[0],
        libraries={**libraries, "nvidia-ml-py": version("nvidia-ml-py")},
        device=device, hardware=hardware, started_at=started_at, finished_at=now(),
        timings_s=timings_s,
        isolation=os.environ.get(ISOLATION_ENV) or None,
        # Set by the experiment image and the Docker runner (/.dockerenv is unreliable:
        # the worker itself may run in a container).
        in_container=os.environ.get("LLEM_IN_CONTAINER") == "1")
