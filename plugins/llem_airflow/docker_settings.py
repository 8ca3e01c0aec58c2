"""The Docker runner's container settings: plain data at parse time, Docker types at run time.

A DAG holds the settings as JSON-like data (image, endpoint, mounts, GPUs, memory, IPC,
user); only a task that starts a container turns them into the Docker client's ``Mount``
and ``DeviceRequest`` objects, so parsing the DAG file of a campaign whose experiments run
on an experiment host (isolation process or warm) never imports the Docker client (~55 ms
per experiment task in the task logs, each task parsing the file).
"""

from __future__ import annotations

import os
from typing import Any

from llem_core.campaign.config import DockerRunner


def docker_settings(runner: DockerRunner) -> dict[str, Any]:
    """Everything a container of this runner is started with, as plain data."""
    mounts = [{"target": m.target, "source": m.source, "read_only": m.read_only}
              for m in runner.mounts]
    env: dict[str, str] = {}
    if runner.model_cache:
        mounts.append({"target": "/models-cache", "source": runner.model_cache,
                       "read_only": True})
        env.update(HF_HOME="/models-cache", HF_HUB_OFFLINE="1")
    return {"image": runner.image, "docker_url": runner.docker_url, "mounts": mounts,
            "environment": env, "gpus": runner.gpus, "shm_size": runner.shm_size_bytes,
            "ipc_mode": runner.ipc_mode, "user": f"{os.getuid()}:{os.getgid()}"}


def same_path_mounts(writable: list[str], read_only: list[str]) -> list[dict[str, Any]]:
    """Host paths bound at the same path inside, so the container and the task name a
    result or an input by the same path."""
    return [{"target": p, "source": p, "read_only": ro}
            for paths, ro in ((writable, False), (read_only, True)) for p in paths]


def mount_objects(mounts: list[dict[str, Any]]) -> list[Any]:
    """Plain mounts as the Docker client's bind ``Mount`` objects (imports the client)."""
    from docker.types import Mount

    return [Mount(target=m["target"], source=m["source"], type="bind",
                  read_only=m["read_only"]) for m in mounts]


def docker_objects(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as DockerOperator / ``containers.run`` arguments (imports the client)."""
    from docker.types import DeviceRequest

    mounts = mount_objects(settings["mounts"])
    gpus = settings["gpus"]
    devices = None
    if gpus == "all":
        devices = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    elif gpus:
        devices = [DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]
    out = {k: v for k, v in settings.items() if k != "gpus"}
    out.update(mounts=mounts, device_requests=devices)
    return out


def docker_args(runner: DockerRunner) -> dict[str, Any]:
    """DockerOperator arguments of a runner: image, endpoint, mounts, GPUs, memory, IPC."""
    return docker_objects(docker_settings(runner))
