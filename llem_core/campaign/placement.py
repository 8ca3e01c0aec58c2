"""Where an experiment runs: host, queue, host GPUs, in-process GPUs and pools.

GPU identity has two numberings. ``ExperimentConfig.gpus`` is what the experiment
process sees (and meters); the Docker runner exposes ``runner.gpus`` (host indices) to
the container, which numbers them from 0. Everything that acts on the *server* (pools,
the readiness sensor, device requests, per-GPU locks) needs host indices; everything
inside the experiment needs the in-process ones. Both are resolved here, once, when a
campaign is expanded, and travel with every planned run.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from llem_core.campaign.config import DockerRunner, ExperimentConfig, LocalRunner


class PlacementError(ValueError):
    """A configuration whose GPUs cannot be placed on the runner's server."""


class Placement(BaseModel):
    """One value per configuration; equal for every configuration of a campaign."""

    host: str = Field(description="Server name used in pool names (runner.host).")
    queue: str = Field(description="Celery queue of that server.")
    host_gpus: list[int] = Field(description="Host GPU indices (empty: CPU only).")
    device_gpus: list[int] = Field(description="GPU indices inside the experiment process.")
    pools: list[str] = Field(description="One pool per host GPU, or the host's CPU pool.")

    @property
    def pool(self) -> str:
        """The Airflow pool the experiment task takes: that of its lowest host GPU.

        A task can hold only one pool; an experiment on several GPUs also holds a lock on
        every one of them while it runs (:mod:`llem_core.runtime.gpu_lock`).
        """
        return self.pools[0]

    @property
    def on_gpu(self) -> bool:
        return bool(self.host_gpus)


def pool_name(host: str, gpu: int | None) -> str:
    return f"llem_{host}_cpu" if gpu is None else f"llem_{host}_gpu{gpu}"


def _host_gpus(runner: DockerRunner | LocalRunner, cfg: ExperimentConfig) -> list[int]:
    if cfg.device == "cpu":
        return []
    if isinstance(runner, LocalRunner) or runner.gpus == "all":
        return list(cfg.gpus)
    exposed = runner.gpus or []
    if not exposed:
        return []  # the container sees no GPU: it runs on the CPU
    outside = [g for g in cfg.gpus if g >= len(exposed)]
    if outside:
        raise PlacementError(
            f"gpus {cfg.gpus} (inside the container) but runner.gpus exposes only "
            f"{len(exposed)} GPU(s) {exposed}: in-container indices run 0..{len(exposed) - 1}")
    return [exposed[g] for g in cfg.gpus]


def resolve(runner: DockerRunner | LocalRunner, cfg: ExperimentConfig) -> Placement:
    """The placement of one configuration on its campaign's runner."""
    host_gpus = _host_gpus(runner, cfg)
    device_gpus = list(cfg.gpus) if host_gpus else []
    pools = [pool_name(runner.host, g) for g in sorted(host_gpus)] or \
        [pool_name(runner.host, None)]
    return Placement(host=runner.host, queue=runner.queue or "default", host_gpus=host_gpus,
                     device_gpus=device_gpus, pools=pools)


def campaign_placement(runner: DockerRunner | LocalRunner,
                       configs: Sequence[tuple[str, ExperimentConfig]]) -> Placement:
    """The one placement shared by every configuration of a campaign.

    An experiment task is mapped over a cycle's configurations and a mapped task has one
    pool and one queue, so every configuration must sit on the same GPUs.
    """
    if not configs:
        raise PlacementError("no configuration to place")
    seen: dict[tuple[int, ...], str] = {}
    first: Placement | None = None
    for name, cfg in configs:
        try:
            p = resolve(runner, cfg)
        except PlacementError as exc:
            raise PlacementError(f"{name}: {exc}") from None
        seen.setdefault(tuple(p.host_gpus), name)
        first = first or p
    if len(seen) > 1:
        sets = "; ".join(f"{list(k) or 'cpu'} ({v})" for k, v in seen.items())
        raise PlacementError(
            f"configurations use different GPUs ({sets}); one campaign runs on one GPU set "
            "(one pool): split it into one campaign file per GPU set")
    assert first is not None
    return first
