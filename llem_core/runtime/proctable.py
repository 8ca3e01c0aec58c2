"""Is a process, or any process of a group, still running? Read from Linux's ``/proc``.

``os.kill(pid, 0)`` and ``os.killpg(pgid, 0)`` also succeed for zombies: processes that
have exited and wait for their parent (or, once orphaned, for PID 1) to collect them.
Waiting for those to vanish waits for someone else's reaper: ~2 s for this project's
development VM's init, forever where the reaper is llem itself (the PID 1 of an experiment
container, which reaps only its own children). A zombie holds no memory, no GPU context and
no socket, so for "has it stopped?" it counts as gone. A leader thread that exited while
other threads of its process run also shows as a zombie: that process still runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

_PROC = Path("/proc")
_DEAD = ("Z", "X")  # zombie, dead


def _stat(pid: int | str) -> list[str] | None:
    """The fields after the command name (state, ppid, pgrp, ...), or None if unreadable."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the name is in parentheses and may itself contain spaces and ')'
    fields = text.rpartition(")")[2].split()
    return fields if len(fields) > 2 else None


def _exited(pid: int | str, fields: list[str]) -> bool:
    if fields[0] not in _DEAD:
        return False
    try:  # an exited leader thread whose process has other live threads
        return len(os.listdir(_PROC / str(pid) / "task")) <= 1
    except OSError:
        return True


def _found(send: Callable[[int, int], None], ident: int) -> bool:
    """Signal 0 reaches something (zombies included): ``os.kill`` a pid, ``os.killpg`` a
    group; someone else's process is found too."""
    try:
        send(ident, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(pid: int) -> bool:
    """The process exists and has not exited (a zombie is not running)."""
    if not _found(os.kill, pid):
        return False
    fields = _stat(pid)
    if fields is None:  # gone since, or hidden from us (/proc hidepid): ask again
        return _found(os.kill, pid)
    return not _exited(pid, fields)


def group_running(pgid: int) -> bool:
    """Some process of the group exists and has not exited."""
    if not _found(os.killpg, pgid):
        return False
    leader = _stat(pgid)
    if leader is not None and leader[2] == str(pgid) and not _exited(pgid, leader):
        return True  # the common case, without reading the whole process table
    if not _PROC.is_dir():
        return True
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(entry.name)
        if fields is not None and fields[2] == str(pgid) and not _exited(entry.name, fields):
            return True
    return False
