"""Energy arithmetic of a window: baseline-adjusted joules, per-token figures and flags.

Pure functions of a reading and a baseline, shared by the experiment runner and the
Python monitor, so both report the same numbers with the same flags.
"""

from __future__ import annotations

from typing import Any

from llem_core.analysis.results import EnergyResult
from llem_core.runtime.energy.base import Baseline, EnergyReading
from llem_core.runtime.energy.trace import baseline_adjusted, relative_difference

# Counter vs polling: a gross disagreement is flagged at any window length; the strict
# bound only on windows long enough for both to settle (averaged power settles in ~1 s).
AGREEMENT_GROSS_REL_DIFF = 0.25
AGREEMENT_MIN_WINDOW_S = 10.0
AGREEMENT_MAX_REL_DIFF = 0.05
MIN_COUNTER_PERIODS = 10


def agreement_flag(reading: EnergyReading) -> tuple[float | None, str | None]:
    """Relative counter/polling difference of a counter reading, and its flag if any."""
    if reading.source != "nvml_counter" or reading.joules is None \
            or reading.polled_joules is None:
        return None, None
    rel = relative_difference(reading.joules, reading.polled_joules)
    if rel is None:
        return None, None
    bound = AGREEMENT_MAX_REL_DIFF if reading.window_s >= AGREEMENT_MIN_WINDOW_S \
        else AGREEMENT_GROSS_REL_DIFF
    if rel > bound:
        return rel, f"energy counter and power polling differ by {rel:.1%} (> {bound:.0%})"
    return rel, None


def window_flags(reading: EnergyReading, adjusted_j: float | None) -> list[str]:
    """Everything that makes a window's energy less trustworthy, one sentence each."""
    flags = list(reading.flags)
    if adjusted_j is not None and adjusted_j < 0:
        flags.append("adjusted energy is negative: idle baseline exceeds the window's power")
    _rel, disagreement = agreement_flag(reading)
    if disagreement:
        flags.append(disagreement)
    period = reading.counter_update_period_s
    if reading.source == "nvml_counter" and period \
            and reading.window_s < MIN_COUNTER_PERIODS * period:
        flags.append(f"window of {reading.window_s:.2f} s is shorter than {MIN_COUNTER_PERIODS} "
                     f"counter updates ({period:.3f} s each): energy is imprecise")
    for dev, th in reading.thermal.items():
        if isinstance(th, dict) and th.get("throttle_reasons"):
            flags.append(f"{dev} throttled: {', '.join(th['throttle_reasons'])}")
    return flags


def adjusted_energy(reading: EnergyReading, baseline: Baseline | None) -> float | None:
    """Energy above idle; None without a baseline or without a measured energy."""
    if baseline is None or reading.joules is None:
        return None
    return baseline_adjusted(reading.joules, baseline.watts, reading.window_s)


def _per(value: float | None, count: int) -> float | None:
    return value / count if value is not None and count else None


def energy_result(reading: EnergyReading, baseline: Baseline | None, output_tokens: int,
                  requests: int) -> EnergyResult:
    """Energy figures of a window: raw and baseline-adjusted side by side, with flags."""
    adjusted = adjusted_energy(reading, baseline)
    rel, _flag = agreement_flag(reading)
    return EnergyResult(
        source=reading.source, note=reading.note, raw_j=reading.joules,
        baseline_w=baseline.watts if baseline else None,
        baseline_s=baseline.seconds if baseline else None,
        baseline_source=baseline.source if baseline else None,
        baseline_temperature_c=baseline.temperature_c if baseline else None,
        adjusted_j=adjusted,
        raw_j_per_output_token=_per(reading.joules, output_tokens),
        adjusted_j_per_output_token=_per(adjusted, output_tokens),
        raw_j_per_request=_per(reading.joules, requests),
        window_s=reading.window_s if reading.source != "none" else None,
        per_device_j=reading.per_device_j,
        polled_j=reading.polled_joules, counter_vs_polled_rel_diff=rel,
        polled_samples=reading.polled_samples, failed_samples=reading.failed_samples,
        counter_failed_reads=reading.counter_failed_reads,
        counter_update_period_s=reading.counter_update_period_s,
        thermal=reading.thermal, flags=window_flags(reading, adjusted))


def baseline_band_flag(baseline_c: float | None, thermal: dict[str, Any],
                       band_c: float | None) -> str | None:
    """Idle power rises with temperature: flag a baseline taken far from the window's
    start temperature (hottest GPU), since subtracting it would bias adjusted energy."""
    starts = [t.get("temperature_start_c") for t in thermal.values() if isinstance(t, dict)]
    starts = [s for s in starts if s is not None]
    if baseline_c is None or band_c is None or not starts:
        return None
    start = max(starts)
    if abs(start - baseline_c) > band_c:
        return (f"idle baseline taken at {baseline_c:.0f} C but the window started at "
                f"{start:.0f} C (band {band_c:.0f} C): adjusted energy may be biased")
    return None
