"""The one exception an experiment raises."""


class ExperimentError(RuntimeError):
    """An experiment that cannot produce a trustworthy result; the message is one line."""
