"""Experiment runtime: one measured experiment (``measure``) with its engines, backends,
serving loads, energy meters, GPU devices and the experiment supervisor (the ``llem host``
process of isolation process/warm)."""
