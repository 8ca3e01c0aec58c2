"""The cyclic garbage collector around an experiment process's one big import.

Importing torch and transformers creates ~600,000 long-lived objects (modules,
classes, functions). With the collector running, every few hundred allocations it walks the young
ones and, ever more often as they pile up, the old ones too: 0.5-0.7 s of a ~3 s import on
two cores (``bench/import_collector.py``). :func:`imports_paused` keeps the collector off
while the libraries import, then moves everything alive into the permanent generation
(:func:`gc.freeze`) and turns it back on. What an import creates lives as long as the
process (the few cycles it leaves as garbage stay, frozen), and no later collection, the
measured window's included, walks those objects again: a fresh ``container`` experiment
then runs with the collector in the state a ``process`` or ``warm`` host's child inherits
(the host pauses and freezes its preload the same way).

Only in a process llem owns: the ``llem run-experiment`` and ``llem host`` commands call
:func:`own_process` first (``llem_core.cli.entry``). A Python user's ``run_experiment``
in a notebook is left alone: freezing their heap would keep whatever they later drop in a
reference cycle from ever being collected. It happens once per process: a forked child
(host modes) inherits the flags, and a long-lived process never freezes twice, so what a
later experiment leaves behind (a released model) stays collectable.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_owned = False
_done = False


def own_process() -> None:
    """This process exists to run experiments (it ends with them): pausing and freezing is
    allowed here."""
    global _owned
    _owned = True


def already_done() -> bool:
    """Whether this process (or the host it was forked from) froze its imports."""
    return _done


@contextmanager
def imports_paused() -> Iterator[None]:
    """No cyclic collection inside; everything alive is frozen and the collector re-enabled
    on the way out (also after an error), the first time only and only in an owned process."""
    global _done
    if _done or not _owned:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        _done = True
        gc.freeze()
        if was_enabled:
            gc.enable()
