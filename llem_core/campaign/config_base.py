"""The building blocks of the config models: their strict base, enums, prompt sources,
decoding and energy settings (re-exported by :mod:`llem_core.campaign.config`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)

from llem_core.campaign.config_rules import bool_as_number
from llem_core.campaign.text_rules import TextChecked

# Seeds feed random.Random, torch.manual_seed and (in other backends) numpy, whose
# seeds stop at 2**32 - 1: the tightest consumer sets the bound.
MAX_SEED = 2**32 - 1
MAX_GPU_INDEX = 255


class Strict(TextChecked):
    """Base of every config model: unknown keys are errors, values are re-validated,
    floats are finite, YAML true/false is not a number, and text holds no control
    characters (:mod:`llem_core.campaign.text_rules`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=True,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        if (isinstance(v, bool | list) and info.field_name is not None
                and bool_as_number(cls.model_fields[info.field_name].annotation, v)):
            raise ValueError("expected a number, got a boolean (true/false)")
        return v


def check_gpu_indices(v: list[int]) -> list[int]:
    if any(g < 0 or g > MAX_GPU_INDEX for g in v):
        raise ValueError(f"GPU indices must be between 0 and {MAX_GPU_INDEX}: {v}")
    if len(set(v)) != len(v):
        raise ValueError(f"GPU indices repeat: {v}")
    return v


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
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the prompt generator.")


class JsonlPrompts(Strict):
    """Prompts read from a JSON-lines file, one object per line."""

    kind: Literal["jsonl"] = "jsonl"
    path: str = Field(..., min_length=1, description="Path of the JSONL file.")
    field: str = Field("text", min_length=1, description="Key holding the prompt text.")
    limit: int | None = Field(
        None, ge=1, le=10_000_000, description="Use at most this many prompts."
    )


def default_tag(field: str, default: str):
    """Discriminator that treats a missing tag as the default variant."""

    def get(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get(field, default))
        return str(getattr(value, field, default))

    return Discriminator(get)


PromptSource = Annotated[
    Annotated[BuiltinPrompts, Tag("builtin")] | Annotated[JsonlPrompts, Tag("jsonl")],
    default_tag("kind", "builtin"),
]


class Decoding(Strict):
    """Decoding settings. Temperature 0 means greedy decoding."""

    temperature: float = Field(
        0.0, ge=0.0, le=5.0, description="Sampling temperature; 0 selects greedy decoding."
    )
    top_k: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Top-k sampling (sampling only)."
    )
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
        0.1, ge=0.001, le=10.0,
        description="Power polling interval (cross-check and fallback), at least 1 ms."
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
