"""Energy meters behind one small protocol (GPUs through the device layer
:mod:`llem_core.runtime.devices`, RAPL for CPU packages, null),
the arithmetic of a window's energy, and :class:`EnergyMonitor` for named windows."""

from llem_core.runtime.energy.base import (
    Baseline,
    EnergyMeter,
    EnergyReading,
    MeterUnavailable,
    measure_idle,
)
from llem_core.runtime.energy.monitor import EnergyMonitor, Measurement, default_sync
from llem_core.runtime.energy.select import open_meter

__all__ = ["Baseline", "EnergyMeter", "EnergyMonitor", "EnergyReading", "Measurement",
           "MeterUnavailable", "default_sync", "measure_idle", "open_meter"]
