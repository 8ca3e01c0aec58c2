"""Exclusive per-GPU locks on one server, held while an experiment runs.

An Airflow task holds a single pool, so an experiment on GPUs [0, 1] takes the pool of
GPU 0 only; another campaign's experiment on GPU 1 could start beside it. Every
experiment therefore also takes an advisory ``flock`` on each of its host GPUs, in index
order (no deadlock), on the server that launches it. The lock is released by the kernel
when the process ends, whatever the way it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from llem_core import env_names

LOCK_DIR_ENV = env_names.LOCK_DIR


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or "/tmp/llem-gpu-locks")


@contextlib.contextmanager
def hold_gpus(host_gpus: Sequence[int], log: Callable[[str], None] = lambda _m: None,
              folder: Path | None = None, poll_s: float = 1.0) -> Iterator[float]:
    """Hold every GPU's lock; yields the seconds spent waiting for them."""
    folder = folder or lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        t0 = time.monotonic()
        for gpu in sorted(set(host_gpus)):
            fh = stack.enter_context(open(folder / f"gpu{gpu}.lock", "a+"))
            waited_logged = False
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited_logged:
                        log(f"GPU {gpu} is in use by another experiment: waiting for it")
                        waited_logged = True
                    time.sleep(poll_s)
            stack.callback(fcntl.flock, fh.fileno(), fcntl.LOCK_UN)
        yield time.monotonic() - t0
