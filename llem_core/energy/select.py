"""Pick the meter a configuration asks for, or explain why it cannot be had."""

from __future__ import annotations

from llem_core.config import EnergyConfig
from llem_core.energy.base import EnergyMeter, MeterUnavailable
from llem_core.energy.null import NullMeter


def open_meter(cfg: EnergyConfig, gpus: list[int], on_gpu: bool) -> EnergyMeter:
    """nvml and rapl are demanded (an error if unavailable); auto falls back to none."""
    kind = str(cfg.meter)
    if kind == "none":
        return NullMeter("energy.meter is none")
    if kind == "nvml" or (kind == "auto" and on_gpu):
        from llem_core.energy.nvml import NvmlMeter  # NVML is loaded only when metering a GPU

        try:
            return NvmlMeter(gpus, cfg.poll_interval_s)
        except MeterUnavailable:
            if kind == "nvml":
                raise
            return NullMeter("running on a GPU but NVML is unavailable")
    from llem_core.energy.rapl import RaplMeter

    try:
        return RaplMeter(cfg.poll_interval_s)
    except MeterUnavailable as exc:
        if kind == "rapl":
            raise
        return NullMeter(f"no GPU in use and no readable RAPL counter ({exc})")
