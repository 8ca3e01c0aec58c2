"""CPU package energy through Linux RAPL (powercap sysfs), for CPU-only experiments.

The counters wrap at ``max_energy_range_uj`` (within a minute on busy servers), so a
thread reads them at the polling interval and accumulates wrapped deltas.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from llem_core.energy.base import Baseline, EnergyReading, MeterUnavailable
from llem_core.energy.trace import counter_delta

POWERCAP = Path("/sys/class/powercap")


def package_domains(root: Path = POWERCAP) -> list[Path]:
    """Top-level RAPL domains (packages), e.g. intel-rapl:0; sub-domains are inside them."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("intel-rapl:*")
                  if p.name.count(":") == 1 and (p / "energy_uj").exists())


class RaplMeter:
    source = "rapl"

    def __init__(self, poll_interval_s: float = 0.1, root: Path = POWERCAP) -> None:
        self.domains = package_domains(root)
        if not self.domains:
            raise MeterUnavailable(f"no RAPL package domain under {root}")
        try:
            self._ranges = {d: int((d / "max_energy_range_uj").read_text()) for d in self.domains}
            for d in self.domains:
                int((d / "energy_uj").read_text())
        except (OSError, ValueError) as exc:
            raise MeterUnavailable(f"RAPL counters unreadable: {exc}") from exc
        self.poll_interval_s = poll_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last: dict[Path, int] = {}
        self._acc: dict[Path, int] = {}
        self._t0 = 0.0
        self._samples = 0

    def _read(self, d: Path) -> int:
        return int((d / "energy_uj").read_text())

    def _accumulate(self) -> None:
        with self._lock:
            for d in self.domains:
                now = self._read(d)
                self._acc[d] += counter_delta(self._last[d], now, self._ranges[d] + 1)
                self._last[d] = now
            self._samples += 1

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self._accumulate()

    def devices(self) -> list[str]:
        return [d.name for d in self.domains]

    def hardware(self) -> dict[str, object]:
        names = {}
        for d in self.domains:
            try:
                names[d.name] = (d / "name").read_text().strip()
            except OSError:
                names[d.name] = d.name
        return {"meter": "rapl", "domains": names}

    def idle(self, seconds: float) -> Baseline:
        self.begin()
        time.sleep(seconds)
        r = self.end()
        return Baseline(watts=r.joules / r.window_s, seconds=r.window_s, source="rapl",
                        per_device_w={k: v / r.window_s for k, v in r.per_device_j.items()})

    def begin(self) -> None:
        self._stop.clear()
        self._last = {d: self._read(d) for d in self.domains}
        self._acc = dict.fromkeys(self.domains, 0)
        self._samples = 1
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._poll, name="llem-rapl-poll", daemon=True)
        self._thread.start()

    def end(self) -> EnergyReading:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._accumulate()
        window = time.monotonic() - self._t0
        per = {d.name: self._acc[d] / 1e6 for d in self.domains}
        return EnergyReading(source="rapl", joules=sum(per.values()), window_s=window,
                             per_device_j=per, polled_samples=self._samples)

    def close(self) -> None:
        self._stop.set()
