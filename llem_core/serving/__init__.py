"""Serving engines under load: an OpenAI-compatible server, a load, and its energy.

Modules: ``config`` (the ``server:`` and ``load:`` sections), ``process`` (launch and stop a
server's process group), ``load`` (arrival schedules), ``client`` (the streaming client),
``window`` (the steady-state window), ``attribution`` (energy per request),
``metrics`` (the result section), ``prometheus`` (optional engine gauges) and
``experiment`` (the phases of a ``backend: server`` experiment).

This package's ``__init__`` imports nothing: :mod:`llem_core.config` imports
:mod:`llem_core.serving.config`, and anything more here would make an import cycle.
"""
