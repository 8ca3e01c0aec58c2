"""Pydantic models of an experiment and of a campaign.

Every model forbids unknown keys, every field has a default (except the model to run)
and a description: the descriptions become the help text of the Airflow trigger form.

Only *field-level* rules live here (types, ranges, allowed values). Rules that relate two
fields of one experiment (``min_output_tokens <= max_output_tokens``, ...) live in
:mod:`llem_core.campaign.grid`, because in a grid such combinations are filtered, not fatal.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from llem_core.campaign.alerts import AlertSettings
from llem_core.campaign.config_base import (
    MAX_GPU_INDEX,
    MAX_SEED,
    BuiltinPrompts,
    Decoding,
    Device,
    DType,
    EnergyConfig,
    JsonlPrompts,
    MeterKind,
    Ordering,
    PromptSource,
    Strict,
    check_gpu_indices,
    default_tag,
)
from llem_core.campaign.config_rules import check_cron, non_finite, parse_size, unordered_kind
from llem_core.campaign.schedule import ScheduleWindow, window_problem
from llem_core.runtime.engines import engines, names, sections
from llem_core.runtime.engines.settings import LoadSettings

# The building blocks live in config_base; this module is where they are imported from.
__all__ = [
    "DAG_ID_PREFIX", "MAX_GPU_INDEX", "MAX_SEED",
    "BuiltinPrompts", "CampaignConfig", "DType", "Decoding", "Device", "DockerRunner",
    "EnergyConfig", "Execution", "ExperimentConfig", "Health", "HealthCheck", "JsonlPrompts",
    "LocalRunner",
    "MeterKind", "Mount", "Ordering", "PromptSource", "RunnerConfig", "Strict",
    "is_local_path", "resolve_model_path",
]

# Airflow DAG ids allow letters, digits, '-', '.', '_' and at most 250 characters; the
# factory prefixes "llem_". Airflow tags hold at most 100 characters and the factory tags
# the DAG "campaign:<name>". The name is also the campaign's results folder: no leading,
# trailing or doubled dot, so that results.safe_part(name) == name and two names never
# share a folder ("abc." and "abc" both became results/abc/).
DAG_ID_PREFIX = "llem_"
CAMPAIGN_TAG_PREFIX = "campaign:"
CAMPAIGN_NAME_MAX = 100 - len(CAMPAIGN_TAG_PREFIX)
_CAMPAIGN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
# Hosts and queues name Airflow pools (llem_<host>_gpu<N>) and Celery queues.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# An experiment's timeout becomes a timedelta in the DAG; beyond a week it is a typo. Every
# experiment has one: a load or a wait that never ends must end somewhere.
MAX_EXPERIMENT_TIMEOUT_S = 7 * 86_400.0
DEFAULT_EXPERIMENT_TIMEOUT_S = 6 * 3600.0


class ExperimentFields(Strict):
    """One inference configuration: what is run and how it is measured. The engines'
    settings sections (``server:``, ``vllm:``, ...) are added from the engine registry:
    :data:`ExperimentConfig` is this model with them."""

    name: str | None = Field(
        None, max_length=200, description="Readable name; derived from the grid point if unset."
    )
    model: str = Field(
        ..., min_length=1,
        description="Hugging Face model id, or a local path starting with '/', './', '../' or '~'.",
    )
    backend: str = Field(
        "pytorch", description="Inference engine: " + ", ".join(names()) + " (README "
        "'Engines').", json_schema_extra={"enum": list(names())})
    dtype: DType = Field(DType.bfloat16, description="Weight and activation dtype.")
    device: Device = Field(
        Device.auto, description="auto: CUDA when available, else CPU (recorded in provenance)."
    )
    batch_size: int = Field(1, ge=1, le=4096, description="Prompts generated together.")
    max_input_tokens: int = Field(
        512, ge=1, le=131_072,
        description="Longest prompt in tokens. Backend pytorch truncates prompts to it; the "
        "served engines (server, vllm, ...) send prompts whole and refuse a prompt of more "
        "words than this (a word is at least one token), and an engine's context "
        "(vllm.max_model_len, ...) must hold max_input_tokens + max_output_tokens.",
    )
    max_output_tokens: int = Field(
        64, ge=1, le=131_072, description="Most tokens generated per request."
    )
    min_output_tokens: int = Field(
        0, ge=0, le=131_072,
        description="Fewest tokens generated per request (EOS suppressed until then).",
    )
    prompts: PromptSource = Field(default_factory=BuiltinPrompts, description="Prompt source.")
    decoding: Decoding = Field(default_factory=Decoding, description="Decoding settings.")
    warmup_runs: int = Field(
        1, ge=0, le=100, description="Unmeasured runs of one batch after loading the model."
    )
    warmup_cv_threshold: float | None = Field(
        None, gt=0.0, le=1.0,
        description="Continue warming up until the coefficient of variation of the last "
        "warmup_cv_window runs' latency is below this (capped by warmup_max_runs).",
    )
    warmup_cv_window: int = Field(3, ge=2, le=50, description="Runs the CV is computed over.")
    warmup_max_runs: int = Field(20, ge=1, le=1000, description="Cap of the warm-up.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of torch and of sampling.")
    gpus: list[int] = Field(
        default_factory=lambda: [0], description="GPU indices the experiment uses and meters."
    )
    energy: EnergyConfig = Field(default_factory=EnergyConfig, description="Energy metering.")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Free metadata, copied into the results."
    )
    load: LoadSettings | None = Field(
        None, description="Served engines (server, vllm, llamacpp, ...): the load pattern "
        "and the steady-state rules.")

    @model_validator(mode="before")
    @classmethod
    def _one_dtype(cls, data: Any) -> Any:
        # An engine section's dtype (vllm.dtype) and dtype name one setting: the
        # experiment's dtype is what is recorded and passed on, so the section's may only
        # say the same or stand in for it.
        if not isinstance(data, dict):
            return data
        for section in sections():
            engine = data.get(section).get("dtype") if isinstance(
                data.get(section), dict) else None
            if engine is None:
                continue
            if "dtype" not in data:
                data = {**data, "dtype": engine}
            elif data["dtype"] != engine:
                raise ValueError(f"{section}.dtype {engine!r} differs from dtype "
                                 f"{data['dtype']!r}: set one of the two")
        return data

    @model_serializer(mode="wrap")
    def _omit_unset_serving(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Absent load and engine sections are left out of every dump, so the config_hash
        # of configurations written before these fields existed does not change.
        data = handler(self)
        if isinstance(data, dict):
            for key in ("load", *sections()):
                if data.get(key, 0) is None:
                    del data[key]
        return data

    @field_validator("backend")
    @classmethod
    def _backend_known(cls, v: str) -> str:
        if v not in engines():
            raise ValueError(f"backend {v!r} is not an engine llem knows (engines: "
                             f"{', '.join(names())})")
        return v

    @field_validator("model")
    @classmethod
    def _not_an_option(cls, v: str) -> str:
        # The model is one argv item of the engine (vLLM's --model value): one that begins
        # with '-' is read as an option there ('-cc.backend' takes the next argument as a
        # JSON setting), and no hub id begins so.
        if v.startswith("-"):
            raise ValueError(f"{v!r} begins with '-': an engine would read it as an option "
                             "(a hub id begins with a letter or digit; write a local folder "
                             "as ./name)")
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus_valid(cls, v: list[int]) -> list[int]:
        return check_gpu_indices(v)

    @field_validator("extra")
    @classmethod
    def _extra_finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        if non_finite(v):
            raise ValueError("holds inf or nan, which JSON results cannot represent")
        kind = unordered_kind(v)
        if kind:
            raise ValueError(f"holds {kind} (a YAML !!set or !!binary): use a list or a string")
        return v

    def is_local_model(self) -> bool:
        return is_local_path(self.model)


ExperimentConfig = create_model(
    "ExperimentConfig", __base__=ExperimentFields, __module__=__name__,
    __doc__=ExperimentFields.__doc__,
    **{section: (engine.settings | None, Field(  # type: ignore[operator]
        None, description=f"backend {engine.name}: {engine.summary}."))
       for section, engine in sections().items()})


def is_local_path(model: str) -> bool:
    """A model is a local path when written as one; anything else is a hub id."""
    return model.startswith(("/", "./", "../", "~"))


class Execution(Strict):
    """How the grid is repeated and ordered."""

    cycles: int = Field(3, ge=1, le=100, description="Times every configuration is run.")
    max_cycles: int | None = Field(
        None, ge=1, le=100,
        description="Most cycles a triggered run may ask for (default: cycles); the DAG has "
        "one task group per possible cycle.",
    )
    ordering: Ordering = Field(
        Ordering.interleaved,
        description="interleaved: every cycle runs all configs in one order; shuffled: a seeded "
        "permutation per cycle; grouped: all cycles of one config, then the next.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the shuffled ordering.")
    config_gap_s: float = Field(
        0.0, ge=0.0, le=3600.0, description="Pause between two experiments."
    )
    cycle_gap_s: float = Field(0.0, ge=0.0, le=86_400.0, description="Pause between two cycles.")
    retries: int = Field(0, ge=0, le=10, description="Airflow retries per experiment task.")
    experiment_timeout_s: float = Field(
        DEFAULT_EXPERIMENT_TIMEOUT_S, ge=1.0, le=MAX_EXPERIMENT_TIMEOUT_S,
        description="Kill an experiment task that runs longer than this (default 6 hours, at "
        "most 7 days; the config gap after it counts). A configuration whose planned load "
        "cannot end within it is refused.",
    )
    isolation: Literal["container", "process", "warm"] = Field(
        "process",
        description="container: a fresh container (or process, local runner) per experiment, "
        "the coldest start. process: one experiment host per DAG run (in the experiment "
        "image for the Docker runner) that imported torch/transformers once and forks a "
        "fresh child per experiment (fresh CUDA context). warm: the host keeps the loaded "
        "model between consecutive experiments with equal model settings.",
    )


    @model_validator(mode="after")
    def _max_cycles_covers_cycles(self) -> Execution:
        if self.max_cycles is not None and self.max_cycles < self.cycles:
            raise ValueError(f"max_cycles ({self.max_cycles}) < cycles ({self.cycles})")
        # the experiment task rests for the gap before it ends (deferred): inside its timeout
        if self.config_gap_s >= self.experiment_timeout_s:
            raise ValueError(f"config_gap_s ({self.config_gap_s:g}) is not shorter than "
                             f"experiment_timeout_s ({self.experiment_timeout_s:g}): the pause "
                             "after each experiment is part of its task, which would time out")
        return self

    @property
    def cycle_limit(self) -> int:
        return self.max_cycles or self.cycles


class Health(Strict):
    """GPU readiness checks."""

    between: Literal["cycles", "experiments"] = Field(
        "cycles",
        description="cycles: a readiness sensor before every cycle; experiments: additionally "
        "every N experiments (see every_n_experiments) inside the experiment task.",
    )
    every_n_experiments: int = Field(1, ge=1, description="With between=experiments: every N.")
    max_temperature_c: float = Field(
        80.0, gt=0.0, le=120.0, description="GPU must be cooler than this to start."
    )
    max_memory_used_pct: float = Field(
        10.0, ge=0.0, le=100.0, description="GPU memory in use must be below this percentage."
    )
    allow_foreign_processes: bool = Field(
        False, description="Start even if other processes run compute on the GPU."
    )
    timeout_s: float = Field(
        600.0, ge=0.0, le=86_400.0, description="Give up waiting (warn, record, continue)."
    )
    poke_interval_s: float = Field(
        15.0, ge=1.0, le=3600.0, description="Re-check interval (at least 1 s).")


def _as_in_health(name: str) -> Any:
    """The same field (default, bounds, description) as Health's: defined once."""
    return copy.deepcopy(Health.model_fields[name])


class HealthCheck(Strict):
    """The readiness thresholds one experiment waits for before it starts (a RunSpec field)."""

    max_temperature_c: float = _as_in_health("max_temperature_c")
    max_memory_used_pct: float = _as_in_health("max_memory_used_pct")
    allow_foreign_processes: bool = _as_in_health("allow_foreign_processes")
    timeout_s: float = _as_in_health("timeout_s")
    poke_interval_s: float = _as_in_health("poke_interval_s")

    @classmethod
    def from_health(cls, health: Health) -> HealthCheck:
        return cls(**{k: getattr(health, k) for k in cls.model_fields})


def _check_name(v: str | None) -> str | None:
    if v is not None and not _NAME.match(v):
        raise ValueError(f"{v!r} must be 1 to 63 letters, digits, '-', '_' or '.', starting "
                         "with a letter or digit (it names Airflow pools and Celery queues)")
    return v


class Mount(Strict):
    source: str = Field(..., min_length=1, description="Host path.")
    target: str = Field(..., description="Absolute path inside the container (not '/').")

    @field_validator("target")
    @classmethod
    def _absolute_target(cls, v: str) -> str:
        if not v.startswith("/") or not v.strip("/"):
            raise ValueError(f"{v!r} must be an absolute path inside the container, not '/'")
        return v
    read_only: bool = Field(True, description="Mount read-only.")


class DockerRunner(Strict):
    """One fresh container per experiment (the default)."""

    type: Literal["docker"] = "docker"
    image: str = Field("llem-experiment:pytorch", min_length=1, description="Experiment image.")
    gpus: list[int] | Literal["all"] | None = Field(
        None, description="Host GPUs exposed through device requests; null exposes none."
    )
    mounts: list[Mount] = Field(default_factory=list, description="Extra bind mounts.")
    model_cache: str | None = Field(
        None, description="Host Hugging Face cache mounted read-only at /models-cache."
    )
    docker_url: str = Field("unix://var/run/docker.sock", description="Docker daemon URL.")
    queue: str | None = Field(None, description="Celery queue (GPU server) to run on.")
    host: str = Field("local", description="Host name used in GPU pool names.")
    _names = field_validator("queue", "host")(_check_name)
    shm_size: str = Field(
        "2g", description="Shared memory of the container: bytes, or 512m, 2g, ... (binary units)."
    )
    ipc_mode: Literal["private", "shareable", "host"] = Field(
        "private", description="IPC namespace of the container. vLLM with tensor parallelism "
        "over several GPUs wants 'host' (CUDA IPC between its workers; allowed only where "
        "the deployment sets LLEM_ALLOW_HOST_IPC=1) or a large shm_size.")

    @field_validator("shm_size", mode="before")
    @classmethod
    def _size_from_int(cls, v: Any) -> Any:
        # YAML reads `shm_size: 1073741824` as an int; bools are refused by parse_size.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("shm_size")
    @classmethod
    def _size_parses(cls, v: str) -> str:
        parse_size(v)
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus_valid(cls, v: list[int] | str | None) -> list[int] | str | None:
        return check_gpu_indices(v) if isinstance(v, list) else v

    @property
    def shm_size_bytes(self) -> int:
        """The shared memory in bytes, as Docker's API takes it."""
        return parse_size(self.shm_size)


class LocalRunner(Strict):
    """A fresh subprocess per experiment, for machines without Docker."""

    type: Literal["local"] = "local"
    python: str | None = Field(
        None, description="Interpreter to use; default: the worker's. A relative path is "
        "relative to the campaign file (as vllm.python); it must be allowed by "
        "LLEM_ALLOWED_PYTHONS.")
    queue: str | None = Field(None, description="Celery queue (GPU server) to run on.")
    host: str = Field("local", description="Host name used in GPU pool names.")
    _names = field_validator("queue", "host")(_check_name)


RunnerConfig = Annotated[
    Annotated[DockerRunner, Tag("docker")] | Annotated[LocalRunner, Tag("local")],
    default_tag("type", "docker"),
]


class CampaignConfig(Strict):
    """A validated campaign file."""

    # free prose: may hold TAB and LF (a YAML block scalar), no other control character
    prose_fields: ClassVar[frozenset[str]] = frozenset({"description"})
    campaign: str = Field(
        ..., min_length=1, max_length=CAMPAIGN_NAME_MAX,
        description="Campaign name: the DAG id (llem_<name>), a DAG tag and the results folder.",
    )
    description: str = Field("", description="Shown on the DAG page; text with lines and tabs, "
                             "no other control character.")
    schedule: str | None = Field(
        None, description="Cron expression or preset (@daily, ...); null: manual only."
    )
    base: dict[str, Any] = Field(
        default_factory=dict, description="Experiment settings shared by every configuration."
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted field path -> values; the Cartesian product is the grid.",
    )
    experiments: list[dict[str, Any]] = Field(
        default_factory=list, description="Explicit configurations (overrides on base)."
    )
    execution: Execution = Field(default_factory=Execution)
    health: Health = Field(default_factory=Health)
    runner: RunnerConfig = Field(default_factory=DockerRunner)
    results_dir: str = Field("results", min_length=1, description="Root of the result files.")
    group_by: list[str] = Field(
        default_factory=list, description="Config fields the statistics are grouped by."
    )
    compare_to: str | None = Field(
        None,
        description="Reference configuration of the comparisons (name, label or config "
        "hash); null: the alphabetically first configuration.",
    )
    schedule_window: ScheduleWindow | None = Field(
        None, description="Time zone of the cron, first and last run time of a schedule."
    )
    alerts: AlertSettings | None = Field(
        None, description="Change points and overruns that raise alerts, and the notifiers "
        "told (llem_core.campaign.alerts).")

    @model_validator(mode="after")
    def _window_fits_schedule(self) -> CampaignConfig:
        problem = window_problem(self.schedule, self.schedule_window)
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("campaign")
    @classmethod
    def _valid_dag_id(cls, v: str) -> str:
        if not _CAMPAIGN_NAME.match(v):
            raise ValueError(
                "must start with a letter or digit and hold only letters, digits, '-', '_' and "
                "single dots not at the end (it becomes the Airflow DAG id and the results "
                "folder)"
            )
        return v

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return check_cron(v.strip())

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for axis, values in v.items():
            if not values:
                raise ValueError(f"axis {axis!r} has no values")
        return v

    @property
    def dag_id(self) -> str:
        return DAG_ID_PREFIX + self.campaign


def resolve_model_path(model: str, relative_to: Path | None) -> str:
    """Make a local model path absolute; hub ids are returned unchanged."""
    if not is_local_path(model):
        return model
    p = Path(model).expanduser()
    if not p.is_absolute() and relative_to is not None:
        p = relative_to / p
    return str(p.resolve())
