"""Optional engine gauges from a Prometheus ``/metrics`` endpoint, sampled during the load.

Only gauges whose names say running requests, waiting requests or KV-cache use are kept
(vLLM: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc`` / ``vllm:gpu_cache_usage_perc``; SGLang and TGI use similar
names). When the endpoint is missing, that is recorded, not guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

KEYS = {"running": ("num_requests_running", "num_running_reqs"),
        "waiting": ("num_requests_waiting", "num_queue_reqs", "queue_size"),
        "kv_cache": ("kv_cache_usage_perc", "gpu_cache_usage_perc", "token_usage")}


def parse_gauges(text: str) -> dict[str, float]:
    """Sum of the samples of each known gauge (summed over label sets, e.g. per engine)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        for key, names in KEYS.items():
            if any(name.endswith(n) for n in names):
                with contextlib.suppress(ValueError):
                    out[key] = out.get(key, 0.0) + float(value)
    return out


class GaugeSampler:
    """Samples the gauges every ``interval_s`` until stopped; ``unavailable`` says why not."""

    def __init__(self, url: str, interval_s: float) -> None:
        self.url = url
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.unavailable: str | None = None
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            while not self._stop.is_set():
                try:
                    r = await client.get(self.url)
                except httpx.HTTPError as exc:
                    self.unavailable = f"{self.url}: {type(exc).__name__}"
                    return
                if r.status_code != 200:
                    self.unavailable = f"{self.url}: HTTP {r.status_code}"
                    return
                gauges = parse_gauges(r.text)
                if not gauges:
                    self.unavailable = f"{self.url}: no running/waiting/KV-cache gauge"
                    return
                self.samples.append((time.monotonic(), gauges))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)

    def stop(self) -> None:
        self._stop.set()

    def summary(self, start: float | None, end: float | None) -> dict[str, float | None]:
        """Mean and max of each gauge inside [start, end]."""
        inside = [g for t, g in self.samples
                  if start is not None and end is not None and start <= t <= end]
        out: dict[str, float | None] = {}
        for key in KEYS:
            vals = [g[key] for g in inside if key in g]
            out[f"{key}_mean"] = sum(vals) / len(vals) if vals else None
            out[f"{key}_max"] = max(vals) if vals else None
        return out
