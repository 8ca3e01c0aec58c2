"""llem_core: campaigns, grids, plans and measured LLM inference experiments.

Pure Python with no Airflow import: it runs inside the experiment containers too.

The Python API is the names in ``__all__``; they are stable within a major version
(fields may be added to results and measurements, none removed or renamed):

- :func:`run_experiment` runs and measures one :class:`ExperimentConfig` and returns an
  :class:`ExperimentResult` (raises :class:`ExperimentError` with a one-line reason).
- :class:`EnergyMonitor` measures named, possibly overlapping windows of your own code;
  each ends with a :class:`Measurement` (``joules`` None with a ``reason`` where nothing
  can measure energy).

Everything else is internal and may change. Names are imported on first use, so that
``import llem_core`` stays light (the Airflow side parses DAGs with it).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "EnergyMonitor": "llem_core.runtime.energy.monitor",
    "Measurement": "llem_core.runtime.energy.monitor",
    "ExperimentConfig": "llem_core.campaign.config",
    "ExperimentResult": "llem_core.analysis.results",
    "ExperimentError": "llem_core.runtime.experiment.errors",
    "RunSpec": "llem_core.analysis.results",
    "run_experiment": "llem_core.runtime.measure",
}
__all__ = ["EnergyMonitor", "ExperimentConfig", "ExperimentError", "ExperimentResult",
           "Measurement", "RunSpec", "__version__", "run_experiment"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llem_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
