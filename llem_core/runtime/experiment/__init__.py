"""One experiment in phases (preflight, import, baseline, load, warm-up, measured window,
result), each a function that can be called and tested alone; :mod:`llem_core.runtime.measure`
chains them."""

from llem_core.runtime.experiment.errors import ExperimentError

__all__ = ["ExperimentError"]
