"""The metric registry: one place that says what each measured metric is.

Every list of metrics in llem (the tidy table's columns, the statistics, the headline
table, the comparisons, chart labels, the per-run XCom summary) is derived from
``METRICS``. A metric's ``name`` is its column in the tidy table and its key in every
summary table; ``path`` says where it lives in an ``ExperimentResult``; ``summary_key``
is its key in the compact per-run summary (``ExperimentResult.summary``), if it is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    label: str
    better: Better
    path: str
    headline: bool = False
    compared: bool = False
    summary_key: str | None = None
    # Cannot be negative (a rate, a raw energy, a latency): summarised on the log scale,
    # so neither the estimate nor its interval can go below zero.
    positive: bool = True

    def value_of(self, result: Any) -> float | None:
        """This metric of one ``ExperimentResult`` (None where it was not measured)."""
        obj = result
        for part in self.path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return float(obj)


METRICS: tuple[Metric, ...] = (
    Metric("tokens_per_s", "tokens/s", "output throughput", "higher",
           "metrics.output_tokens_per_s", headline=True, compared=True,
           summary_key="output_tokens_per_s"),
    Metric("j_per_token_adjusted", "J/token", "energy per token above idle", "lower",
           "energy.adjusted_j_per_output_token", headline=True, compared=True,
           summary_key="adjusted_j_per_output_token", positive=False),
    Metric("j_per_token_raw", "J/token", "energy per token, raw", "lower",
           "energy.raw_j_per_output_token", headline=True, compared=True),
    Metric("energy_adjusted_j", "J", "energy above idle", "lower", "energy.adjusted_j",
           headline=True, compared=True, summary_key="adjusted_j", positive=False),
    Metric("energy_raw_j", "J", "energy, raw", "lower", "energy.raw_j", summary_key="raw_j"),
    Metric("requests_per_s", "requests/s", "request throughput", "higher",
           "metrics.requests_per_s"),
    Metric("ttft_mean_s", "s", "TTFT mean", "lower", "metrics.ttft_s.mean"),
    Metric("ttft_p50_s", "s", "TTFT p50", "lower", "metrics.ttft_s.p50", headline=True,
           compared=True, summary_key="ttft_p50_s"),
    Metric("ttft_p90_s", "s", "TTFT p90", "lower", "metrics.ttft_s.p90"),
    Metric("itl_mean_s", "s", "ITL mean", "lower", "metrics.itl_s.mean"),
    Metric("itl_p50_s", "s", "ITL p50", "lower", "metrics.itl_s.p50", headline=True,
           compared=True, summary_key="itl_p50_s"),
    Metric("itl_p90_s", "s", "ITL p90", "lower", "metrics.itl_s.p90"),
    Metric("tpot_mean_s", "s", "TPOT mean", "lower", "metrics.tpot_s.mean"),
    Metric("e2e_p50_s", "s", "end-to-end p50", "lower", "metrics.e2e_s.p50"),
)
REGISTRY: dict[str, Metric] = {m.name: m for m in METRICS}


def get(name: str) -> Metric:
    """The metric called ``name``; KeyError names the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r} (known: {', '.join(REGISTRY)})") from None


def names() -> tuple[str, ...]:
    """Every metric, in registry order (= the tidy table's metric columns)."""
    return tuple(m.name for m in METRICS)


def headline() -> tuple[str, ...]:
    """The metrics of the compact per-configuration table (CLI, XCom, plugin page)."""
    return tuple(m.name for m in METRICS if m.headline)


def compared() -> tuple[str, ...]:
    """The metrics compared against the reference configuration."""
    return tuple(m.name for m in METRICS if m.compared)


def positive(name: str) -> bool:
    """Whether the metric cannot be negative (unknown metrics: not assumed so)."""
    m = REGISTRY.get(name)
    return m.positive if m else False


def units() -> dict[str, str]:
    """Column -> unit (the tidy table's metric columns)."""
    return {m.name: m.unit for m in METRICS}


# A unit shown to people differently from how it is stored: (shown unit, factor).
DISPLAY_UNITS: dict[str, tuple[str, float]] = {"s": ("ms", 1000.0)}


def display_unit(name: str) -> tuple[str, float]:
    """(unit shown, factor from the stored value) of a metric: latencies in ms."""
    unit = units().get(name, "")
    return DISPLAY_UNITS.get(unit, (unit, 1.0))


def short_label(name: str) -> str:
    """The label without its unit (where the unit is shown on its own); unknown names are
    returned unchanged."""
    m = REGISTRY.get(name)
    return m.label if m else name


def axis_label(name: str) -> str:
    """Label with the unit it is shown in: "TTFT p50 (ms)"."""
    unit, _ = display_unit(name)
    return f"{short_label(name)} ({unit})" if unit else short_label(name)


def label(name: str) -> str:
    """A human label with its stored unit; unknown names are returned unchanged."""
    m = REGISTRY.get(name)
    return f"{m.label} ({m.unit})" if m else name


def summary_keys() -> dict[str, str]:
    """Key in the per-run summary (XCom) -> table column, for metrics the summary carries."""
    return {m.summary_key: m.name for m in METRICS if m.summary_key}
