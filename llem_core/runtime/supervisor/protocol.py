"""Messages between an experiment task and its host: one JSON object per line on a Unix
stream socket. The task sends one request; a ``run`` is answered by ``log`` lines and one
``done``. A connection closed by the task (Airflow killed it) kills the experiment."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

ISOLATION_MODES = ("container", "process", "warm")
# AF_UNIX paths hold at most 107 bytes: hosts live under a short folder, one per key.
HOST_ROOT_ENV = "LLEM_HOST_ROOT"
DEFAULT_HOST_ROOT = f"/tmp/llem-hosts-{os.getuid()}"  # per user: nobody else's socket
MAX_LINE = 64 << 20


class HostError(RuntimeError):
    """The host could not be reached, died, or refused; the message is one line."""


def host_root() -> Path:
    return Path(os.environ.get(HOST_ROOT_ENV) or DEFAULT_HOST_ROOT)


def ensure_root() -> Path:
    """The host root, made 0700 if missing; refused if it is a link or someone else's (a
    planted socket or pid file would be trusted)."""
    import stat

    root = host_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
        raise HostError(f"{root} is a link or belongs to another user: refusing to use it")
    return root


def host_key(*parts: str) -> str:
    """A short stable name for one host (DAG id, run id, GPU set)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def host_dir(key: str) -> Path:
    return host_root() / key


def socket_path(key: str) -> Path:
    return host_dir(key) / "host.sock"


def send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")


class LineReader:
    """JSON objects, one per line, from a socket (None at end of stream)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = b""

    def next(self) -> dict[str, Any] | None:
        while b"\n" not in self.buf:
            chunk = self.conn.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
            if len(self.buf) > MAX_LINE:
                raise HostError("message too long")
        line, self.buf = self.buf.split(b"\n", 1)
        value = json.loads(line)
        if not isinstance(value, dict):
            raise HostError("malformed message")
        return value
