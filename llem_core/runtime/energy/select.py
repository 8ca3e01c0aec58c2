"""Pick the meter a configuration asks for, or explain why it cannot be had."""

from __future__ import annotations

from llem_core.campaign.config import EnergyConfig
from llem_core.runtime.energy.base import EnergyMeter, MeterUnavailable
from llem_core.runtime.energy.null import NullMeter


def open_meter(cfg: EnergyConfig, gpus: list[int], on_gpu: bool | None) -> EnergyMeter:
    """nvml and rapl are demanded (an error if unavailable); auto falls back to none.

    ``on_gpu``: whether the workload runs on a GPU (auto then meters it with NVML); None
    when unknown (auto tries NVML, then RAPL). ``meter: nvml`` is honoured whatever the
    device: it meters the GPUs in ``gpus`` even when the workload ended up on the CPU.
    """
    kind = str(cfg.meter)
    if kind == "none":
        return NullMeter("energy.meter is none")
    nvml_problem = None
    if kind == "nvml" or (kind == "auto" and on_gpu is not False):
        from llem_core.runtime.energy.nvml import (
            NvmlMeter,  # NVML is loaded only when metering a GPU
        )

        try:
            return NvmlMeter(gpus, cfg.poll_interval_s)
        except MeterUnavailable as exc:
            if kind == "nvml":
                raise
            if on_gpu:
                return NullMeter(f"running on a GPU but NVML is unavailable ({exc})")
            nvml_problem = str(exc)
    from llem_core.runtime.energy.rapl import RaplMeter

    try:
        return RaplMeter(cfg.poll_interval_s)
    except MeterUnavailable as exc:
        if kind == "rapl":
            raise
        gpu = f"no NVML ({nvml_problem})" if nvml_problem else "no GPU in use"
        return NullMeter(f"{gpu} and no readable RAPL counter ({exc})")
