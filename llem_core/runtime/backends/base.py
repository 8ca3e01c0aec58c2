"""The backend protocol: load a model, prepare prompts outside the timed path, generate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from llem_core.campaign.config import ExperimentConfig


class BackendError(RuntimeError):
    """A backend failure with a one-line reason (missing model, out of memory, ...)."""


@dataclass
class BatchTiming:
    """One generate() call over a batch: when it started and when each decode step ended."""

    submitted: float
    step_times: list[float]
    input_lengths: list[int]
    output_lengths: list[int]


class InferenceBackend(Protocol):
    device: str

    def import_modules(self) -> None:
        """Import the code load() would import lazily, so load() times only the loading."""
        ...

    def load(self) -> dict[str, Any]: ...

    def prepare(self, texts: list[str]) -> list[Any]: ...

    def generate(self, batch: Any) -> BatchTiming: ...

    def reset_peak_memory(self) -> None: ...

    def peak_memory(self) -> tuple[int | None, str]: ...

    def versions(self) -> dict[str, str | None]: ...

    def close(self) -> None: ...


def get_backend(config: ExperimentConfig) -> InferenceBackend:
    """The in-process backend of the experiment's engine (:mod:`llem_core.runtime.engines`)."""
    from llem_core.runtime.engines import InProcessEngine, engine_for

    engine = engine_for(config.backend)
    if not isinstance(engine, InProcessEngine):
        raise BackendError(f"backend {config.backend!r} is a served engine, not in-process")
    return engine.backend(config)
