"""The runtime of served engines: an OpenAI-compatible server, a load, and its energy.

Modules: ``process`` (launch and stop a server's process group), ``load`` (arrival
schedules), ``client`` (the streaming client), ``window`` (the steady-state window),
``attribution`` (energy per request), ``metrics`` (the result section), ``prometheus``
(optional engine gauges), ``engines`` (engines kept between experiments, isolation warm)
and ``experiment`` (the phases of an experiment on any served engine). What an engine is
(its settings, argv, rules) lives in :mod:`llem_core.runtime.engines`; ``engine_env`` and
``vllm_flags`` hold the allow-lists of what a campaign may hand an engine.

This package's ``__init__`` imports nothing: the engines' settings import
``engine_env`` and ``vllm_flags`` while :mod:`llem_core.campaign.config` is being built.
"""
