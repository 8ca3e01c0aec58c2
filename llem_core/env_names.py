"""Every environment variable name llem reads or sets, in one place.

Modules import the name from here instead of spelling it: a rename, or the question
"who reads this?", is then one grep for the constant. ``tests/test_env_names.py`` fails
when a converted module spells an ``LLEM_`` name as a string literal again. Allow-lists of
*other programs'* variables (what an engine may be given, what a local experiment
inherits) are policy data and stay beside their policy.
"""
from __future__ import annotations

PREFIX = "LLEM_"  # every llem variable starts so (a local experiment inherits them all)

# --- Deployment settings llem reads ------------------------------------------------------
CAMPAIGNS_DIR = "LLEM_CAMPAIGNS_DIR"  # folder of the campaign files the DAG file reads
CACHE_DIR = "LLEM_CACHE_DIR"  # llem's cache folder (default ~/.cache/llem)
LOCK_DIR = "LLEM_LOCK_DIR"  # folder of the per-GPU lock files (default /tmp/llem-gpu-locks)
HOST_ROOT = "LLEM_HOST_ROOT"  # state folder of the experiment-host processes
MAX_GRID_SIZE = "LLEM_MAX_GRID_SIZE"  # upper bound of a campaign's expanded grid
VLLM_PYTHON = "LLEM_VLLM_PYTHON"  # interpreter of the vLLM environment (scripts/gpu_check.py)

# --- Trust allow-lists (llem_core.campaign.trust, llem_core.campaign.engine_policy) ----
ALLOWED_IMAGES = "LLEM_ALLOWED_IMAGES"  # image globs a campaign may run
ALLOWED_MOUNT_ROOTS = "LLEM_ALLOWED_MOUNT_ROOTS"  # folders a campaign may mount
ALLOWED_DOCKER_URLS = "LLEM_ALLOWED_DOCKER_URLS"  # Docker daemon URL globs
ALLOWED_PYTHONS = "LLEM_ALLOWED_PYTHONS"  # interpreters the local runner may start
ALLOWED_SERVER_COMMANDS = "LLEM_ALLOWED_SERVER_COMMANDS"  # server.command[0] globs
ALLOW_HOST_IPC = "LLEM_ALLOW_HOST_IPC"  # "1": a Docker runner may share the host's IPC
ALLOWED_VLLM_FLAGS = "LLEM_ALLOWED_VLLM_FLAGS"  # extra vLLM flags a campaign may pass
ALLOWED_ENGINE_ENV = "LLEM_ALLOWED_ENGINE_ENV"  # extra engine variables a campaign may set
ALLOWED_NOTIFY_CONNECTIONS = "LLEM_ALLOWED_NOTIFY_CONNECTIONS"  # notifier connection globs

# --- Hand-offs from a runner to `llem run-experiment` ------------------------------------
SPEC_JSON = "LLEM_SPEC_JSON"  # the run's RunSpec as JSON (data, never a command line)
HOST_NAME = "LLEM_HOST_NAME"  # the GPU server's name for provenance (a container's is random)
ISOLATION = "LLEM_ISOLATION"  # how the experiment process is isolated (container, host, ...)
IN_CONTAINER = "LLEM_IN_CONTAINER"  # "1" inside the experiment image

# --- Other programs' variables llem sets or reads -----------------------------------------
CUDA_DEVICE_ORDER = "CUDA_DEVICE_ORDER"  # set to PCI_BUS_ID so torch counts GPUs as NVML does
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"  # the GPUs a launched engine sees
HF_HUB_OFFLINE = "HF_HUB_OFFLINE"  # "1": Hugging Face libraries never reach the hub
VLLM_CACHE_ROOT = "VLLM_CACHE_ROOT"  # vLLM's compile cache folder
PYTHONUNBUFFERED = "PYTHONUNBUFFERED"  # "1": a child's log lines arrive as they are written
AIRFLOW_HOME = "AIRFLOW_HOME"  # Airflow's home folder (shown by `python -m llem_airflow`)

# Values llem sets with the names above.
PCI_BUS_ID = "PCI_BUS_ID"
