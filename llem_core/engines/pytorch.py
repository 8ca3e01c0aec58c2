"""``backend: pytorch``: Hugging Face transformers' ``generate`` in the experiment process
(:mod:`llem_core.backends.pytorch`), measured by the phases of :mod:`llem_core.runner`. It
has no section of its own: its settings are the experiment's fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llem_core.engines.base import InProcessEngine

if TYPE_CHECKING:
    from llem_core.backends.base import InferenceBackend
    from llem_core.config import ExperimentConfig


class PytorchEngine(InProcessEngine):
    name = "pytorch"
    summary = "Hugging Face transformers generate() in the experiment process"

    def backend(self, cfg: ExperimentConfig) -> InferenceBackend:
        from llem_core.backends.pytorch import PytorchBackend  # torch is imported only here

        return PytorchBackend(cfg)


ENGINE = PytorchEngine()
