"""Is a process, or any process of a group, still running? Read from Linux's ``/proc``.

``os.kill(pid, 0)`` and ``os.killpg(pgid, 0)`` also succeed for zombies: processes that
have exited and wait for their parent (or, once orphaned, for PID 1) to collect them.
Waiting for those to vanish waits for someone else's reaper: ~2 s for this project's
development VM's init, forever where the reaper is llem itself (the PID 1 of an experiment
container, which reaps only its own children). A zombie holds no memory, no GPU context and
no socket, so for "has it stopped?" it counts as gone.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_DEAD = ("Z", "X")  # zombie, dead


def _stat(pid: int | str) -> list[str] | None:
    """The fields after the command name (state, ppid, pgrp, ...), or None if gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the name is in parentheses and may itself contain spaces and ')'
    return text.rpartition(")")[2].split()


def running(pid: int) -> bool:
    """The process exists and has not exited (a zombie is not running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, someone else's
    fields = _stat(pid)
    if fields is None:
        return not _PROC.is_dir()  # no /proc to ask: existence is all we know
    return fields[0] not in _DEAD


def group_running(pgid: int) -> bool:
    """Some process of the group exists and has not exited."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not _PROC.is_dir():
        return True
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(entry.name)
        if fields is not None and len(fields) > 2 and fields[2] == str(pgid) \
                and fields[0] not in _DEAD:
            return True
    return False
