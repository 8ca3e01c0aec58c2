"""What an experiment task calls: reach the host, hand it one experiment, stream its log."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from llem_core.runtime.supervisor.protocol import HostError, LineReader, send


def request(sock: Path, message: dict, timeout_s: float = 5.0) -> dict:
    """One short request (ping, shutdown); HostError when nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(str(sock))
            send(conn, message)
            answer = LineReader(conn).next()
    except (OSError, ValueError) as exc:
        raise HostError(f"no experiment host at {sock}: {type(exc).__name__}") from None
    if answer is None:
        raise HostError(f"the experiment host at {sock} closed the connection")
    return answer


def alive(sock: Path) -> dict | None:
    try:
        return request(sock, {"op": "ping"}, timeout_s=2.0)
    except HostError:
        return None


def run_on_host(sock: Path, spec_json: str, out: str, log: Callable[[str], None],
                timeout_s: float | None = None) -> tuple[int, str | None]:
    """Run one experiment on the host: (exit status, the host's reason when it did not end
    normally). HostError when the host cannot be reached or dies mid-run."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(sock))
    except OSError as exc:
        raise HostError(f"no experiment host at {sock}: {type(exc).__name__}") from None
    with conn:
        send(conn, {"op": "run", "spec": spec_json, "out": out, "timeout_s": timeout_s})
        reader = LineReader(conn)
        while True:
            try:
                msg = reader.next()
            except (OSError, ValueError) as exc:
                raise HostError(f"lost the experiment host at {sock}: "
                                f"{type(exc).__name__}") from None
            if msg is None:
                raise HostError(f"the experiment host at {sock} died during the experiment")
            if "log" in msg:
                log(str(msg["log"]))
            elif msg.get("done"):
                return int(msg.get("rc", 1)), msg.get("error")
