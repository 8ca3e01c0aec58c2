"""CPU package energy through Linux RAPL (powercap sysfs), for CPU-only experiments.

The counters wrap at ``max_energy_range_uj`` (within a minute on busy servers), so from
the moment the meter opens a thread reads them at the polling interval and accumulates
wrapped deltas into a running total; a window is the difference of two marks of it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from llem_core.runtime.energy.base import EnergyReading, MeterUnavailable
from llem_core.runtime.energy.trace import counter_delta

POWERCAP = Path("/sys/class/powercap")


def package_domains(root: Path = POWERCAP) -> list[Path]:
    """Top-level RAPL domains (packages), e.g. intel-rapl:0; sub-domains are inside them."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("intel-rapl:*")
                  if p.name.count(":") == 1 and (p / "energy_uj").exists())


@dataclass(frozen=True)
class RaplMark:
    t: float
    total_uj: dict[str, int]
    reads: int
    failed_reads: int
    edge_failed: int = 0  # domains unreadable at this very mark


class RaplMeter:
    source = "rapl"

    def __init__(self, poll_interval_s: float = 0.1, root: Path = POWERCAP) -> None:
        self.domains = package_domains(root)
        if not self.domains:
            raise MeterUnavailable(f"no RAPL package domain under {root}")
        try:
            self._ranges = {d: int((d / "max_energy_range_uj").read_text()) for d in self.domains}
            self._last = {d: self._read(d) for d in self.domains}
        except (OSError, ValueError) as exc:
            raise MeterUnavailable(f"RAPL counters unreadable: {exc}") from exc
        self.poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._total = dict.fromkeys(self.domains, 0)
        self._reads = 0
        self._failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="llem-rapl-poll", daemon=True)
        self._thread.start()

    def _read(self, d: Path) -> int:
        return int((d / "energy_uj").read_text())

    def _accumulate(self) -> float:
        return self._accumulate_counted()[0]

    def _accumulate_counted(self) -> tuple[float, int]:
        """(when, how many domains failed to read now)."""
        with self._lock:
            before = self._failed
            for d in self.domains:
                try:
                    now = self._read(d)
                except (OSError, ValueError):
                    # Skipped, not zero: the next good read carries the whole delta.
                    self._failed += 1
                    continue
                self._total[d] += counter_delta(self._last[d], now, self._ranges[d] + 1)
                self._last[d] = now
            self._reads += 1
            return time.monotonic(), self._failed - before

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self._accumulate()

    def hardware(self) -> dict[str, object]:
        names = {}
        for d in self.domains:
            try:
                names[d.name] = (d / "name").read_text().strip()
            except OSError:
                names[d.name] = d.name
        return {"meter": "rapl", "domains": names}

    def mark(self) -> RaplMark:
        t, failed = self._accumulate_counted()
        with self._lock:
            return RaplMark(t, {d.name: v for d, v in self._total.items()}, self._reads,
                            self._failed, failed)

    def reading(self, start: RaplMark, end: RaplMark) -> EnergyReading:
        per = {k: (end.total_uj[k] - start.total_uj[k]) / 1e6 for k in start.total_uj}
        # A read failed at the start mark is counted there, yet it is this window's too.
        failed = end.failed_reads - start.failed_reads + start.edge_failed
        r = EnergyReading(source="rapl", joules=sum(per.values()), window_s=end.t - start.t,
                          per_device_j=per, polled_samples=end.reads - start.reads,
                          failed_samples=failed)
        if failed:
            r.flags.append(f"{failed} RAPL reads failed and were skipped")
        edges = [e for e, m in (("start", start), ("end", end)) if m.edge_failed]
        if edges:
            r.flags.append(f"RAPL unreadable at the window's {' and '.join(edges)}: energy "
                           "since the last good read is counted in the wrong window")
        return r

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
