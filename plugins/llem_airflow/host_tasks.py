"""The experiment host of a DAG run (``execution.isolation`` process or warm): started by
the run's setup task, used by every experiment task, stopped by its teardown task.

One host per DAG run and GPU set, on the server that runs the experiments (same queue). The
local runner starts ``python -m llem_core host`` as a detached process; the Docker runner
starts it in a container of the experiment image (no network, the runner's GPUs, mounts,
shared memory and IPC) with the host's socket folder bind-mounted, so that the Airflow
worker reaches it through a Unix socket. An experiment task that finds no live host (it
died, or a cleared task runs after the teardown) starts a new one. Stopping asks the host
to shut down, then kills the process group or removes the container, whatever state it
is in; a host also exits by itself after ``IDLE_EXIT_S`` without a request.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llem_core import env_names
from llem_core.runtime.proctable import running
from llem_core.runtime.supervisor.client import alive, request
from llem_core.runtime.supervisor.protocol import (
    HostError,
    ensure_root,
    host_dir,
    host_key,
    socket_path,
)

IDLE_EXIT_S = 900.0
START_TIMEOUT_S = 600.0
LABEL = "llem.host"


def key_for(dag_id: str, run_id: str, host: str, gpus: list[int]) -> str:
    return host_key(dag_id, run_id, host, ",".join(map(str, gpus)))


def _wait_alive(sock: Path, died: Any, log_tail: Any, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        answer = alive(sock)
        if answer is not None:
            return answer
        reason = died()
        if reason:
            raise HostError(f"the experiment host did not start: {reason}: {log_tail()}")
        if time.monotonic() > deadline:
            raise HostError(f"the experiment host did not answer within {timeout_s:g} s: "
                            f"{log_tail()}")
        time.sleep(0.2)


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(empty log)"


def start_local(key: str, mode: str, python: str | None, env: dict[str, str]) -> dict:
    """A detached host process (its own session: it outlives the setup task)."""
    ensure_root()
    stop(key)  # an unresponsive host of the same run goes first
    folder = host_dir(key)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock, log = socket_path(key), folder / "host.log"
    cmd = [python or sys.executable, "-m", "llem_core", "host", "--socket", str(sock),
           "--mode", mode, "--idle-exit-s", str(IDLE_EXIT_S)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    (folder / "host.pid").write_text(str(proc.pid))

    def died() -> str | None:
        code = proc.poll()
        return None if code is None else f"exited with code {code}"

    answer = _wait_alive(sock, died, lambda: _tail(log), START_TIMEOUT_S)
    return {"key": key, "socket": str(sock), "pid": proc.pid, "mode": mode,
            "log": str(log), "host_pid": answer.get("pid")}


def start_docker(key: str, mode: str, docker: dict[str, Any], results_dir: str,
                 inputs: list[str], env: dict[str, str]) -> dict:
    """A host container of the experiment image; its socket folder is shared with us."""
    import docker as docker_sdk
    from llem_airflow.docker_settings import docker_objects, same_path_mounts

    ensure_root()
    stop(key, docker_url=docker["docker_url"])  # a stale host of the same run goes first
    folder = host_dir(key)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock = socket_path(key)
    client = docker_sdk.DockerClient(base_url=docker["docker_url"])
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    # the socket folder and results writable, the run's inputs read-only
    own = same_path_mounts([str(folder), results_dir], [p for p in inputs if Path(p).exists()])
    args = docker_objects({**docker, "mounts": docker["mounts"] + own})
    container = client.containers.run(
        args["image"], command=["llem", "host", "--socket", str(sock), "--mode", mode,
                                "--idle-exit-s", str(IDLE_EXIT_S)],
        detach=True, network_mode="none", privileged=False, mounts=args["mounts"],
        environment={**args["environment"], **env},
        device_requests=args["device_requests"], shm_size=args["shm_size"],
        ipc_mode=args["ipc_mode"], user=args["user"],
        labels={LABEL: key}, name=f"llem-host-{key}",
        # Docker's init (tini) as PID 1 reaps what a serving engine's processes leave
        # orphaned over the host's experiments (the host reaps only its own children)
        init=True)

    def died() -> str | None:
        container.reload()
        return None if container.status in ("created", "running") else \
            f"container {container.status}"

    def tail() -> str:
        try:
            text = container.logs(tail=5).decode(errors="replace").strip()
        except Exception:  # the container may be gone already
            return "(no log)"
        return text.splitlines()[-1][:300] if text else "(empty log)"

    try:
        answer = _wait_alive(sock, died, tail, START_TIMEOUT_S)
    except HostError:
        with contextlib.suppress(Exception):
            container.remove(force=True)
        raise
    return {"key": key, "socket": str(sock), "container": container.id, "mode": mode,
            "host_pid": answer.get("pid")}


def stop(key: str, docker_url: str | None = None) -> list[str]:
    """Stop the host of ``key`` whatever state it is in; what was done, for the log."""
    done = []
    sock = socket_path(key)
    with contextlib.suppress(HostError):
        request(sock, {"op": "shutdown"}, timeout_s=5.0)
        done.append("asked the host to shut down")
    folder = host_dir(key)
    pid_file = folder / "host.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().strip() or 0)
        # only our host, checked again after the wait: a pid reused by another process
        # after the host exited is spared
        if pid > 0 and _is_host(pid, sock) and wait_gone(pid, 10.0) is False \
                and _is_host(pid, sock):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                done.append(f"killed host process group {pid}")
    if docker_url is not None:
        import docker as docker_sdk

        client = docker_sdk.DockerClient(base_url=docker_url)
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}={key}"}):
            with contextlib.suppress(Exception):
                c.remove(force=True)
                done.append(f"removed container {c.short_id}")
    shutil.rmtree(folder, ignore_errors=True)
    return done


def _is_host(pid: int, sock: Path) -> bool:
    try:
        return str(sock).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Whether the host exited within ``timeout_s``; an exited host that its reaper (init,
    since the task that started it is gone) has not collected yet counts as gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not running(pid):
            return True
        time.sleep(0.05)
    return False


def host_environment(base: dict[str, str]) -> dict[str, str]:
    """The host's environment (its mode is its ``--mode``; each run's isolation rides in
    its RunSpec)."""
    return {**base, env_names.PYTHONUNBUFFERED: "1",
            env_names.HOST_NAME: socket.gethostname()}
