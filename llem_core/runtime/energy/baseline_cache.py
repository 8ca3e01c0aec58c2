"""Idle baselines cached per GPU for a limited time, with the age recorded on use.

Measuring idle power takes seconds to minutes per experiment; on a dedicated GPU the
idle floor changes slowly, so a recent measurement taken at a similar temperature is
reused. The cache is a small JSON file per device in the llem cache folder.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from llem_core.analysis.results import safe_part, write_atomic
from llem_core.cache import cache_root
from llem_core.campaign.config import EnergyConfig
from llem_core.runtime.energy.base import Baseline


def cache_path(device_key: str) -> Path:
    return cache_root() / "baselines" / f"{safe_part(device_key)}.json"


def load(device_key: str, max_age_s: float, temperature_c: float | None,
         band_c: float | None, now: float | None = None) -> tuple[Baseline, float] | None:
    """A cached baseline and its age, if young enough and taken within the temperature band."""
    if max_age_s <= 0:
        return None
    try:
        data = json.loads(cache_path(device_key).read_text())
        age = (now if now is not None else time.time()) - float(data["measured_at"])
        cached_t = data.get("temperature_c")
        cached_t = None if cached_t is None else float(cached_t)
        b = data["baseline"]
        found = Baseline(watts=float(b["watts"]), seconds=float(b["seconds"]),
                         source=str(b["source"]), per_device_w=dict(b.get("per_device_w", {})),
                         temperature_c=cached_t)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or not a baseline: measure again
    # A cached NaN/inf or negative power is no baseline: it would become adjusted energy.
    if not (math.isfinite(found.watts) and found.watts >= 0 and math.isfinite(age)):
        return None
    if age < 0 or age > max_age_s:
        return None
    if band_c is not None and temperature_c is not None and cached_t is not None \
            and not abs(cached_t - temperature_c) <= band_c:
        return None
    return found, age


def store(device_key: str, baseline: Baseline, temperature_c: float | None,
          now: float | None = None) -> None:
    write_atomic(cache_path(device_key), json.dumps({
        "measured_at": now if now is not None else time.time(),
        "temperature_c": temperature_c, "baseline": asdict(baseline)}))


def device_key(hardware: dict[str, object], source: str) -> str:
    """The cache key of the metered devices: GPU UUIDs (else indices), else the meter."""
    gpus = hardware.get("gpus") or []
    return "+".join(str(g.get("uuid") or g.get("index")) for g in gpus  # type: ignore[union-attr]
                    if isinstance(g, dict)) or source


def obtain(key: str, energy: EnergyConfig, temperature_c: float | None,
           measure: Callable[[float], Baseline],
           log: Callable[[str], None]) -> tuple[Baseline, float | None]:
    """Idle power before the model loads: reused from the per-GPU cache when recent and
    taken at a similar temperature (its age is returned), else measured and cached."""
    cached = load(key, energy.baseline_cache_s, temperature_c, energy.baseline_band_c)
    if cached is not None:
        log(f"reusing idle baseline {cached[0].watts:.1f} W measured {cached[1]:.0f} s ago")
        return cached
    log(f"measuring idle baseline for {energy.baseline_s} s")
    baseline = measure(energy.baseline_s)
    baseline.temperature_c = temperature_c
    if energy.baseline_cache_s > 0:
        store(key, baseline, temperature_c)
    return baseline, None
