"""The experiment host: one long-lived process per DAG run and GPU set that has imported
torch, transformers and llem once and runs each experiment handed to it.

Modes (``execution.isolation``): ``process`` forks a fresh child per experiment (the host
itself never initialises CUDA, so each child gets its own CUDA context and allocator);
``warm`` keeps one worker that keeps the loaded model, or the running serving engine,
between consecutive experiments with equal model/engine settings. ``container`` (the
coldest) does not use a host. Modules: ``protocol`` (messages on the Unix socket),
``server`` (the host), ``worker`` (what runs an experiment inside it), ``client`` (what an
experiment task calls).
"""
