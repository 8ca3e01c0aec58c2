"""Energy meters behind one small protocol: NVML (GPU), RAPL (CPU package), null."""

from llem_core.energy.base import Baseline, EnergyMeter, EnergyReading, MeterUnavailable
from llem_core.energy.select import open_meter

__all__ = ["Baseline", "EnergyMeter", "EnergyReading", "MeterUnavailable", "open_meter"]
