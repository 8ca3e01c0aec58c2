"""``backend: pytorch``: Hugging Face transformers' ``generate`` in the experiment process
(:mod:`llem_core.runtime.backends.pytorch`), measured by the phases of
:mod:`llem_core.runtime.measure`. It
has no section of its own: its settings are the experiment's fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llem_core.runtime.engines.base import InProcessEngine

if TYPE_CHECKING:
    from llem_core.campaign.config import ExperimentConfig
    from llem_core.runtime.backends.base import InferenceBackend


class PytorchEngine(InProcessEngine):
    name = "pytorch"
    summary = "Hugging Face transformers generate() in the experiment process"

    def backend(self, cfg: ExperimentConfig) -> InferenceBackend:
        from llem_core.runtime.backends.pytorch import PytorchBackend  # torch is imported only here

        return PytorchBackend(cfg)


ENGINE = PytorchEngine()
