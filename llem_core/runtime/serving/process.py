"""Launch an OpenAI-compatible server in its own process group, wait for it, stop it.

The argv is run without a shell (campaign values are data). The server's stdout and stderr
go to a log file that is kept whatever happens. :meth:`ServerProcess.stop` always signals
the whole group (engines fork workers), SIGTERM first, SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

import httpx

from llem_core.runtime.proctable import group_running


class ServerError(RuntimeError):
    """A server that could not start or answer; the message is one line."""


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server's leader gets SIGTERM if llem dies without stopping it (SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM received while a server runs: unwinds so that the server is stopped."""


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Turn SIGTERM (Airflow killing the task) into an exception inside the block, so the
    ``finally`` that stops the server runs; a no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(f"signal {signum} received")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def render_argv(command: Sequence[str], port: int, model: str) -> list[str]:
    """Replace the placeholders {port} and {model} inside each argument; nothing else."""
    return [a.replace("{port}", str(port)).replace("{model}", model) for a in command]


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def wait_http_ok(url: str, timeout_s: float, poll_s: float = 0.5,
                 check: Callable[[], None] | None = None, where: str = "") -> float:
    """Seconds until GET ``url`` answered 200; ServerError when time runs out.

    ``check`` runs before every try and raises to stop early (a server that died).
    """
    t0 = time.monotonic()
    last = "no answer"
    with httpx.Client(timeout=min(5.0, timeout_s)) as client:
        while True:
            if check is not None:
                check()
            try:
                r = client.get(url)
                if r.status_code == 200:
                    return time.monotonic() - t0
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() - t0 >= timeout_s:
                raise ServerError(f"server not healthy at {url} within {timeout_s:g} s "
                                  f"(last: {last}{where})")
            time.sleep(poll_s)


class ServerProcess:
    """One launched server; use as a context manager so the group is always stopped."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 stop_timeout_s: float = 20.0) -> None:
        self.argv = argv
        self.log_path = log_path
        self.stop_timeout_s = stop_timeout_s
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})}, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except OSError as exc:
            self._log.close()
            raise ServerError(f"server command {argv[0]!r} could not start: {exc}") from exc
        self.pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        self.stopped = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_healthy(self, url: str, timeout_s: float, poll_s: float = 0.5) -> float:
        """Seconds until ``url`` answered 200; ServerError if the process dies or time runs out."""

        def alive() -> None:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(f"server exited with code {code} before it was healthy "
                                  f"(log {self.log_path}: {_last_line(self.log_path)})")

        return wait_http_ok(url, timeout_s, poll_s, alive, f"; log {self.log_path}")

    def group_alive(self) -> bool:
        """A process of the group still runs; exited ones waiting to be reaped do not count
        (their reaper may be slow, or be llem itself as a container's PID 1)."""
        return group_running(self.pgid)

    def stop(self) -> int | None:
        """Stop the whole group (idempotent); the leader's exit code (None if it was killed)."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        try:
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout_s
            while time.monotonic() < deadline and self.group_alive():
                self.proc.poll()  # reap the leader so the group can empty
                time.sleep(0.1)
            if self.group_alive():
                self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            for _ in range(100):  # killed processes take a moment to finish exiting
                if not self.group_alive():
                    break
                time.sleep(0.05)
        finally:
            self._log.close()
        return self.proc.returncode

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
