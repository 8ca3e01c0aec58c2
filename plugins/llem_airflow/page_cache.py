"""Rendered result pages kept in the api-server's memory, by what they were rendered from.

A report or history page over 10,000 result files takes seconds to render (reading and
validating every file, the statistics, the charts) and minutes to go stale: a run's files
change while it runs and then never again. A page is therefore kept under a key of the
route, its arguments, llem's version and a digest of the folder's listing
(:func:`llem_core.analysis.untrusted_files.fingerprint`: every file's path, device, inode, size,
modification and change time, read without following any link, and every problem the
listing names). The digest is taken before the page is rendered, on every request, so:

- any file added, removed, renamed, replaced or written gives another key: never a stale
  page. A write changes the file's change time, which no writer can set back;
- a page is not kept while a file changed within :data:`SETTLE_NS` of the request (the
  clock's tick is coarser than a nanosecond: a second write within the tick of the first
  would leave the listing as it was), so a folder being written is rendered each time;
- nothing is kept on disk or in the results folder (which every experiment can write):
  the cache cannot be poisoned from there, and it dies with the process;
- memory is bounded (:data:`MAX_BYTES` in all, least recently used first out).

Authorisation is checked by the route before the cache is asked: a page is only ever
returned to a request that could have rendered it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

from llem_core import __version__
from llem_core.analysis import untrusted_files as untrusted

MAX_BYTES = 128 * 2**20
SETTLE_NS = 5 * 10**9  # also covers a file server whose clock is a little ahead


def _every_file(name: str) -> bool:
    return True


class PageCache:
    """Pages by (key, listing digest); bounded, thread-safe (the api-server's routes run
    in a thread pool)."""

    def __init__(self, max_bytes: int = MAX_BYTES, settle_ns: int = SETTLE_NS) -> None:
        self.max_bytes = max_bytes
        self.settle_ns = settle_ns
        self.enabled = True
        self.renders = 0  # pages rendered (a miss, or not cacheable)
        self.hits = 0
        self._pages: OrderedDict[Hashable, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._pages)

    def page(self, key: Hashable, folder: Path, trusted: Path,
             render: Callable[[], str]) -> str:
        """The page ``render`` makes from the files under ``folder``, from the cache when
        none of them changed (every file counts, not only those the page reads today).

        ``key``: everything else the page depends on (route, campaign, arguments);
        ``trusted``: the folder above whose links are followed (the campaign's
        results_dir). ``render`` may raise; nothing is kept then.
        """
        if not self.enabled:
            self.renders += 1
            return render()
        with untrusted.open_folder(folder, trusted) as f:
            digest, newest = untrusted.fingerprint(f, _every_file)
        full = (key, str(folder), __version__, digest)
        with self._lock:
            text = self._pages.get(full)
            if text is not None:
                self._pages.move_to_end(full)
                self.hits += 1
                return text
        text = render()
        self.renders += 1
        size = sys.getsizeof(text)
        if time.time_ns() - newest < self.settle_ns or size > self.max_bytes // 4:
            return text
        with self._lock:
            if full not in self._pages:
                self._pages[full] = text
                self._bytes += size
            while self._bytes > self.max_bytes and self._pages:
                _, old = self._pages.popitem(last=False)
                self._bytes -= sys.getsizeof(old)
        return text
