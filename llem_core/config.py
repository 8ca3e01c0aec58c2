"""Pydantic models of an experiment and of a campaign.

Every model forbids unknown keys, every field has a default (except the model to run)
and a description: the descriptions become the help text of the Airflow trigger form.

Only *field-level* rules live here (types, ranges, allowed values). Rules that relate two
fields of one experiment (``min_output_tokens <= max_output_tokens``, ...) live in
:mod:`llem_core.grid`, because in a grid such combinations are filtered, not fatal.
"""

from __future__ import annotations

import copy
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

from llem_core.schedule import ScheduleWindow, window_problem
from llem_core.serving.config import LoadSettings, ServerSettings

# Airflow DAG ids allow letters, digits, '-', '.', '_' and at most 250 characters; the
# factory prefixes "llem_".
DAG_ID_PREFIX = "llem_"
_CAMPAIGN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")
CRON_PRESETS = ("@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly",
                "@annually", "@continuous")


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=True)


class Backend(StrEnum):
    pytorch = "pytorch"
    vllm = "vllm"
    tensorrt = "tensorrt"
    server = "server"  # any OpenAI-compatible server under load (llem_core.serving)


AVAILABLE_BACKENDS = (Backend.pytorch, Backend.server)


class DType(StrEnum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Device(StrEnum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


class MeterKind(StrEnum):
    auto = "auto"
    nvml = "nvml"
    rapl = "rapl"
    none = "none"


class Ordering(StrEnum):
    interleaved = "interleaved"
    shuffled = "shuffled"
    grouped = "grouped"


class BuiltinPrompts(Strict):
    """Synthetic prompts made of seeded pseudo-words: reproducible and needing no data file."""

    kind: Literal["builtin"] = "builtin"
    count: int = Field(8, ge=1, le=100_000, description="Number of prompts (requests).")
    length: int = Field(
        64, ge=1, le=131_072, description="Length of each prompt in tokens (before truncation)."
    )
    seed: int = Field(0, ge=0, description="Seed of the prompt generator.")


class JsonlPrompts(Strict):
    """Prompts read from a JSON-lines file, one object per line."""

    kind: Literal["jsonl"] = "jsonl"
    path: str = Field(..., min_length=1, description="Path of the JSONL file.")
    field: str = Field("text", min_length=1, description="Key holding the prompt text.")
    limit: int | None = Field(None, ge=1, description="Use at most this many prompts.")


def _tag(field: str, default: str):
    """Discriminator that treats a missing tag as the default variant."""

    def get(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get(field, default))
        return str(getattr(value, field, default))

    return Discriminator(get)


PromptSource = Annotated[
    Annotated[BuiltinPrompts, Tag("builtin")] | Annotated[JsonlPrompts, Tag("jsonl")],
    _tag("kind", "builtin"),
]


class Decoding(Strict):
    """Decoding settings. Temperature 0 means greedy decoding."""

    temperature: float = Field(
        0.0, ge=0.0, le=5.0, description="Sampling temperature; 0 selects greedy decoding."
    )
    top_k: int | None = Field(None, ge=1, description="Top-k sampling (sampling only).")
    top_p: float | None = Field(
        None, gt=0.0, le=1.0, description="Nucleus sampling mass (sampling only)."
    )
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="Repetition penalty.")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0.0


class EnergyConfig(Strict):
    """How energy is measured."""

    meter: MeterKind = Field(
        MeterKind.auto,
        description="auto: NVML when a GPU is visible, else RAPL when readable, else none.",
    )
    baseline_s: float = Field(
        10.0, ge=0.0, le=600.0,
        description="Seconds of idle power sampled before the model loads; 0 skips the baseline.",
    )
    poll_interval_s: float = Field(
        0.1, gt=0.0, le=10.0, description="Power polling interval (cross-check and fallback)."
    )
    min_window_s: float = Field(
        10.0, ge=0.0, le=3600.0,
        description="Repeat the measured workload until the window lasts at least this long "
        "(NVML's counter updates every ~100 ms and averaged power settles in ~1 s: short "
        "windows read 0 J or large relative errors).",
    )
    baseline_cache_s: float = Field(
        0.0, ge=0.0, le=86_400.0,
        description="Reuse an idle baseline measured on the same GPU within this many "
        "seconds (its age is recorded); 0 measures it for every experiment.",
    )
    baseline_band_c: float | None = Field(
        5.0, gt=0.0, le=50.0,
        description="A cached baseline is reused only if it was taken within this many "
        "degrees C of the GPU's current temperature.",
    )
    start_temperature_max_c: float | None = Field(
        None, gt=0.0, le=120.0,
        description="Before measuring, wait until the GPU is at most this warm.",
    )
    start_wait_s: float = Field(
        300.0, ge=0.0, le=86_400.0,
        description="Longest wait for start_temperature_max_c (then measure and flag it).",
    )


class ExperimentConfig(Strict):
    """One inference configuration: what is run and how it is measured."""

    name: str | None = Field(
        None, max_length=200, description="Readable name; derived from the grid point if unset."
    )
    model: str = Field(
        ..., min_length=1,
        description="Hugging Face model id, or a local path starting with '/', './', '../' or '~'.",
    )
    backend: Backend = Field(Backend.pytorch, description="Inference backend.")
    dtype: DType = Field(DType.bfloat16, description="Weight and activation dtype.")
    device: Device = Field(
        Device.auto, description="auto: CUDA when available, else CPU (recorded in provenance)."
    )
    batch_size: int = Field(1, ge=1, le=4096, description="Prompts generated together.")
    max_input_tokens: int = Field(
        512, ge=1, le=131_072, description="Prompts are truncated to this many tokens."
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
    seed: int = Field(0, ge=0, description="Seed of torch and of sampling.")
    gpus: list[int] = Field(
        default_factory=lambda: [0], description="GPU indices the experiment uses and meters."
    )
    energy: EnergyConfig = Field(default_factory=EnergyConfig, description="Energy metering.")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Free metadata, copied into the results."
    )
    server: ServerSettings | None = Field(
        None, description="backend server: the OpenAI-compatible server (command or url).")
    load: LoadSettings | None = Field(
        None, description="backend server: the load pattern and the steady-state rules.")

    @model_serializer(mode="wrap")
    def _omit_unset_serving(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Absent server/load sections are left out of every dump, so the config_hash of
        # configurations written before these fields existed does not change.
        data = handler(self)
        if isinstance(data, dict):
            for key in ("server", "load"):
                if data.get(key, 0) is None:
                    del data[key]
        return data

    @field_validator("backend")
    @classmethod
    def _backend_available(cls, v: Backend) -> Backend:
        if v not in AVAILABLE_BACKENDS:
            names = ", ".join(b.value for b in AVAILABLE_BACKENDS)
            raise ValueError(
                f"backend {Backend(v).value!r} is not available yet (available: {names})")
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus_valid(cls, v: list[int]) -> list[int]:
        if any(g < 0 for g in v):
            raise ValueError("GPU indices must be >= 0")
        if len(set(v)) != len(v):
            raise ValueError(f"GPU indices repeat: {v}")
        return v

    def is_local_model(self) -> bool:
        return is_local_path(self.model)


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
    seed: int = Field(0, ge=0, description="Seed of the shuffled ordering.")
    config_gap_s: float = Field(
        0.0, ge=0.0, le=3600.0, description="Pause between two experiments."
    )
    cycle_gap_s: float = Field(0.0, ge=0.0, le=86_400.0, description="Pause between two cycles.")
    retries: int = Field(0, ge=0, le=10, description="Airflow retries per experiment task.")
    experiment_timeout_s: float | None = Field(
        None, gt=0.0, description="Kill an experiment that runs longer than this."
    )


    @model_validator(mode="after")
    def _max_cycles_covers_cycles(self) -> Execution:
        if self.max_cycles is not None and self.max_cycles < self.cycles:
            raise ValueError(f"max_cycles ({self.max_cycles}) < cycles ({self.cycles})")
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
    poke_interval_s: float = Field(15.0, gt=0.0, le=3600.0, description="Re-check interval.")


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


class Mount(Strict):
    source: str = Field(..., min_length=1, description="Host path.")
    target: str = Field(..., min_length=1, description="Path inside the container.")
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
    host: str = Field("local", min_length=1, description="Host name used in GPU pool names.")
    shm_size: str = Field("2g", description="Shared memory of the container.")


class LocalRunner(Strict):
    """A fresh subprocess per experiment, for machines without Docker."""

    type: Literal["local"] = "local"
    python: str | None = Field(None, description="Interpreter to use; default: the worker's.")
    queue: str | None = Field(None, description="Celery queue (GPU server) to run on.")
    host: str = Field("local", min_length=1, description="Host name used in GPU pool names.")


RunnerConfig = Annotated[
    Annotated[DockerRunner, Tag("docker")] | Annotated[LocalRunner, Tag("local")],
    _tag("type", "docker"),
]


class CampaignConfig(Strict):
    """A validated campaign file."""

    campaign: str = Field(..., min_length=1, max_length=200, description="Campaign name.")
    description: str = Field("", description="Shown on the DAG page.")
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
    schedule_window: ScheduleWindow | None = Field(
        None, description="Time zone of the cron, first and last run time of a schedule."
    )

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
                "must start with a letter or digit and hold only letters, digits, '-', '.', '_' "
                "(it becomes the Airflow DAG id)"
            )
        return v

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        if v.startswith("@"):
            if v not in CRON_PRESETS:
                raise ValueError(f"unknown preset {v!r}; use one of {', '.join(CRON_PRESETS)}")
            return v
        fields = v.split()
        if len(fields) not in (5, 6) or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"{v!r} is neither a 5-field cron expression nor a preset")
        return v

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
