"""What an engine declares: :class:`Engine` and its two kinds.

- :class:`InProcessEngine`: the experiment process loads the model and generates
  (PyTorch ``generate``); measured by :mod:`llem_core.runtime.measure`'s phases.
- :class:`ServedEngine`: an OpenAI-compatible server under a load
  (:mod:`llem_core.runtime.serving.experiment`); :class:`LaunchedEngine` is one llem starts from a
  typed section (argv, environment, health and metrics paths, version for provenance).

An engine module subclasses one of them, sets its class attributes and overrides what it
does differently; :mod:`llem_core.runtime.engines` registers it. Nothing here imports torch or
httpx: the config models read the declarations, the runtime imports what it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from llem_core.campaign.config_base import DType, Strict
from llem_core.env_names import CUDA_VISIBLE_DEVICES, HF_HUB_OFFLINE
from llem_core.runtime.engines.settings import LaunchedSettings, ServerSettings, shared_values

if TYPE_CHECKING:
    from llem_core.campaign.config import ExperimentConfig
    from llem_core.runtime.backends.base import InferenceBackend

ALL_DTYPES = frozenset(DType)
# The allow-lists a program field falls under (llem_core.campaign.trust): an interpreter the local
# runner may start, or the program of a launched server.
ProgramList = Literal["python", "server_command"]


@dataclass(frozen=True)
class Program:
    """A section field naming a program the local runner would start on the worker."""

    field: str  # the field in the engine's section ("python", "command")
    allow_list: ProgramList
    first_of_list: bool = False  # the field is an argv: its first item is the program


@dataclass(frozen=True)
class Served:
    """The server one served experiment talks to, as the serving pipeline reads it: built
    by the engine from its section (never validated again: llem sets what a campaign may
    not, such as the engine's GPUs)."""

    env: dict[str, str]
    startup_timeout_s: float
    stop_timeout_s: float
    endpoint: str
    token_ids: bool
    max_num_seqs: int | None
    loaded_baseline_s: float
    metrics_interval_s: float
    request_timeout_s: float
    command: list[str] | None = None
    url: str | None = None
    port: int | None = None
    health_path: str = "/health"
    model_name: str | None = None
    fixed_length: str = "ignore_eos"
    metrics_path: str | None = "/metrics"
    cache_root: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, section: ServerSettings) -> Served:
        return cls(**section.model_dump())


class Engine:
    """One inference engine: its ``backend:`` name, its settings section, its rules."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for the README's engine table and `llem` help
    section: ClassVar[str | None] = None  # its section in an experiment (``vllm:``)
    settings: ClassVar[type[Strict] | None] = None
    served: ClassVar[bool] = False
    dtypes: ClassVar[frozenset[str]] = ALL_DTYPES
    programs: ClassVar[tuple[Program, ...]] = ()
    # the section field that is the engine's environment (engine allow-list, README)
    env_field: ClassVar[str | None] = None
    model_is_file: ClassVar[bool] = False  # a local model is one file, not a saved folder

    def section_of(self, cfg: ExperimentConfig) -> Any:
        """The engine's section of ``cfg``; its defaults when the section is absent."""
        if self.section is None or self.settings is None:
            return None
        return getattr(cfg, self.section) or self.settings()

    def conflicts(self, cfg: ExperimentConfig) -> list[str]:
        """Reasons ``cfg`` cannot run on this engine, though each field is valid."""
        return []

    def timeout_conflicts(self, cfg: ExperimentConfig, timeout_s: float) -> list[str]:
        """What the experiment certainly spends, against its task's timeout."""
        return []

    def warnings(self, cfg: ExperimentConfig) -> list[str]:
        return []


class InProcessEngine(Engine):
    """The experiment process loads the model and generates; prompts longer than
    max_input_tokens are truncated."""

    def backend(self, cfg: ExperimentConfig) -> InferenceBackend:
        raise NotImplementedError

    def warm_key(self, cfg: ExperimentConfig) -> tuple[Any, ...]:
        """Everything that shapes the loaded weights and where they live: two consecutive
        experiments with equal keys share the model under isolation warm."""
        return (self.name, cfg.model, str(cfg.dtype), str(cfg.device), tuple(cfg.gpus))

    def timeout_conflicts(self, cfg: ExperimentConfig, timeout_s: float) -> list[str]:
        if cfg.energy.min_window_s >= timeout_s:
            return [f"energy.min_window_s ({cfg.energy.min_window_s:g} s) is not less than "
                    f"execution.experiment_timeout_s ({timeout_s:g} s)"]
        return []


def planned_requests(cfg: ExperimentConfig) -> int | None:
    """Requests a load sends: load.num_requests, else one per prompt (None: not known
    before the prompts file is read)."""
    if cfg.load is not None and cfg.load.num_requests is not None:
        return cfg.load.num_requests
    return cfg.prompts.count if cfg.prompts.kind == "builtin" else cfg.prompts.limit


class ServedEngine(Engine):
    """An OpenAI-compatible server under a load (the ``load:`` section)."""

    served = True
    launched: ClassVar[bool] = False  # llem starts it from its section (LaunchedEngine)
    version_path: ClassVar[str | None] = None  # GET path answering {"version": ...}
    library: ClassVar[str | None] = None  # its key in provenance.libraries

    def server(self, cfg: ExperimentConfig, cache_root: str | None = None) -> Served:
        raise NotImplementedError

    def version(self, url: str, server: Served) -> str | None:
        """The running engine's version for provenance; None (never a guess) when it does
        not say."""
        if self.version_path is None:
            return None
        import httpx  # only where a server runs

        try:
            r = httpx.get(url + self.version_path, timeout=5.0)
            value = r.json().get("version") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def cache_root(self, cfg: ExperimentConfig) -> str | None:
        """A fresh folder for the engine's own caches, removed after it (None: none)."""
        return None

    def keep_key(self, cfg: ExperimentConfig, server: Served) -> tuple[Any, ...] | None:
        """The launch a running engine may be reused for under isolation warm; None: the
        engine is never kept (its caches would favour the next experiment)."""
        return None

    def conflicts(self, cfg: ExperimentConfig) -> list[str]:
        out = []
        if cfg.prompts.kind == "builtin" and cfg.prompts.length > cfg.max_input_tokens:
            out.append(f"backend {cfg.backend} sends each prompt whole (only backend pytorch "
                       f"truncates): prompts.length {cfg.prompts.length} words are at least "
                       f"as many tokens, more than max_input_tokens ({cfg.max_input_tokens})")
        out += self.engine_conflicts(cfg)
        return out + load_conflicts(cfg)

    def engine_conflicts(self, cfg: ExperimentConfig) -> list[str]:
        return []

    def timeout_conflicts(self, cfg: ExperimentConfig, timeout_s: float) -> list[str]:
        load, n = cfg.load, planned_requests(cfg)
        if load is None or load.pattern != "rate" or load.rate is None or n is None:
            return []
        planned = (n - 1) / load.rate  # the mean of the seeded gamma schedule
        if planned < timeout_s:
            return []
        return [f"load: {n} requests (load.num_requests, else the prompt count) at "
                f"load.rate {load.rate:g}/s take about {planned:.0f} s to send, not "
                f"less than execution.experiment_timeout_s ({timeout_s:g} s): the load "
                "would never finish"]


def load_conflicts(cfg: ExperimentConfig) -> list[str]:
    load = cfg.load
    if load is None:
        return [f"backend {cfg.backend} needs a load section (load.pattern ...)"]
    out = []
    if load.pattern == "concurrency" and load.concurrency is None:
        out.append("load.pattern concurrency needs load.concurrency")
    if load.pattern != "concurrency" and load.concurrency is not None:
        out.append(f"load.concurrency is set but load.pattern is {load.pattern}")
    if load.pattern == "rate" and load.rate is None:
        out.append("load.pattern rate needs load.rate")
    if load.pattern != "rate" and load.rate is not None:
        out.append(f"load.rate is set but load.pattern is {load.pattern}")
    if load.arrival == "poisson" and load.burstiness != 1.0:
        out.append(f"load.burstiness {load.burstiness:g} needs load.arrival gamma "
                   "(Poisson arrivals have burstiness 1)")
    return out


class LaunchedEngine(ServedEngine):
    """A server llem starts from the engine's typed section: ``<python> -m <module>`` of an
    :class:`~llem_core.runtime.engines.settings.InterpreterSettings` section (an engine started
    otherwise overrides :meth:`program` and :attr:`programs`)."""

    settings: ClassVar[type[LaunchedSettings]]
    launched = True
    module: ClassVar[str]  # ``<python> -m <module>``
    # the distribution whose version the engine's interpreter reports, when the server
    # itself answers no version request
    distribution: ClassVar[str | None] = None
    health_path: ClassVar[str] = "/health"
    metrics_path: ClassVar[str | None] = "/metrics"
    fixed_length: ClassVar[str] = "ignore_eos"
    programs = (Program("python", "python"),)
    env_field = "env"

    def program(self, cfg: ExperimentConfig, python: str | None = None) -> list[str]:
        """``<python> -m <module>``: the section's interpreter, else the given one, else
        the experiment's own."""
        return [self.section_of(cfg).python or python or sys.executable, "-m", self.module]

    def argv(self, cfg: ExperimentConfig) -> list[str]:
        """The server's argv; ``{port}`` is filled in when the port is chosen."""
        raise NotImplementedError

    def env(self, cfg: ExperimentConfig, cache_root: str | None) -> dict[str, str]:
        """The engine's environment: no hub access for a local model, only the
        experiment's GPUs visible, then the section's own variables."""
        env = {"DO_NOT_TRACK": "1"}
        if cfg.is_local_model():
            env[HF_HUB_OFFLINE] = "1"
        env[CUDA_VISIBLE_DEVICES] = "" if cfg.device == "cpu" else visible_devices(
            cfg.gpus, os.environ.get(CUDA_VISIBLE_DEVICES))
        return {**env, **self.section_of(cfg).env}

    def server(self, cfg: ExperimentConfig, cache_root: str | None = None) -> Served:
        return Served(**{**shared_values(self.section_of(cfg)),
                         "env": self.env(cfg, cache_root)},
                      command=self.argv(cfg), health_path=self.health_path,
                      model_name=cfg.model, fixed_length=self.fixed_length,
                      metrics_path=self.metrics_path, cache_root=cache_root)


    def version(self, url: str, server: Served) -> str | None:
        if self.distribution is None or not server.command:
            return super().version(url, server)
        code = f"import importlib.metadata as m; print(m.version({self.distribution!r}))"
        try:
            done = subprocess.run([server.command[0], "-c", code], capture_output=True,
                                  text=True, timeout=60, env=server.env | {
                                      "PATH": os.environ.get("PATH", "")}, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return (done.stdout.strip() or None) if done.returncode == 0 else None


def visible_devices(gpus: list[int], parent: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for the engine: the experiment's in-process GPU indices are
    positions in what this process sees (the container's devices, or the parent's list)."""
    if parent:
        seen = [d.strip() for d in parent.split(",") if d.strip()]
        return ",".join(seen[i] for i in gpus if i < len(seen))
    return ",".join(str(i) for i in gpus)


def parallel_conflicts(cfg: ExperimentConfig, what: str, size: int) -> list[str]:
    """An engine splitting the model over ``size`` GPUs must be metered on exactly those."""
    if cfg.device == "cpu" or size == len(cfg.gpus):
        return []
    return [f"{what} {size} differs from the {len(cfg.gpus)} gpus metered ({cfg.gpus}): "
            "energy would miss GPUs or count idle ones"]


def context_conflicts(cfg: ExperimentConfig, what: str, length: int | None) -> list[str]:
    """An engine's context must hold the longest prompt and its output."""
    need = cfg.max_input_tokens + cfg.max_output_tokens
    if length is None or length >= need:
        return []
    return [f"{what} {length} is shorter than max_input_tokens + max_output_tokens ({need})"]


def gpu_only_conflicts(cfg: ExperimentConfig) -> list[str]:
    """An engine that has no CPU build."""
    if cfg.device == "cpu":
        return [f"backend {cfg.backend} runs only on GPUs, but device is cpu"]
    return []
