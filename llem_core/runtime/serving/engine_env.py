"""The environment a campaign may give an engine llem launches (``vllm.env``, ``server.env``).

Two layers. A floor, refused in every config whatever the deployment allows
(:func:`checked_env`, a model rule): variables that make the launched program load or run
code from a path or a name (the dynamic loader's, the interpreters', CUDA's injection
library, NCCL's plugins, OpenSSL's configuration, Triton's compilers, ...) and variables
that select GPUs (the engine must run on the experiment's GPUs, the ones the meters, pools
and locks cover). Then an allow-list (:func:`engine_env_problem`, applied by
:mod:`llem_core.campaign.trust` with the deployment's additions from ``LLEM_ALLOWED_ENGINE_ENV``):
only variables that tune threads, memory, logging and vLLM's own knobs, because a
deny-list cannot keep up with every library that reads a path or a plugin name from its
environment.
"""

from __future__ import annotations

import re
from collections.abc import Collection

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Environment that makes an allow-listed program load or run code from elsewhere: the
# dynamic loader's and the interpreters' variables, the shell's start-up file, the search
# path for the programs it spawns (vLLM's compilers), the compilers themselves, vLLM's
# logging configuration (a dictConfig: its '()' factories call anything importable) and
# plugins, CUDA's injection library, NCCL's plugin libraries and configuration file,
# OpenSSL's configuration (it loads engines and providers), Triton's tool paths, torch's
# compile and extension caches and the folders that hold them by default (compiled code
# loaded as found; inductor's remote caches too), OpenMP's tools and CA bundles (who the
# engine trusts when it downloads). llem's own fresh VLLM_CACHE_ROOT is set past this floor,
# so a campaign's is refused by the allow-list instead.
_CODE_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON", "CUDA_INJECTION", "OPENSSL_", "TRITON_",
                      "TORCHINDUCTOR_")
_CODE_ENV_NAMES = frozenset({
    "PATH", "BASH_ENV", "ENV", "GCONV_PATH", "CC", "CXX", "VLLM_LOGGING_CONFIG_PATH",
    "NODE_OPTIONS", "NODE_PATH",
    "PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
    "VLLM_NCCL_SO_PATH", "VLLM_PLUGINS",
    "NCCL_NET_PLUGIN", "NCCL_TUNER_PLUGIN", "NCCL_PROFILER_PLUGIN", "NCCL_NET",
    "NCCL_CONF_FILE", "NCCL_DEBUG_FILE", "TORCH_EXTENSIONS_DIR", "PYTORCH_KERNEL_CACHE_PATH",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE",
    # OpenMP's tool libraries (loaded at start); the folders the default compile caches
    # live under (Triton's ~/.triton, inductor's $TMPDIR/torchinductor_<user>, ~/.cache)
    "OMP_TOOL_LIBRARIES", "HOME", "XDG_CACHE_HOME", "TMPDIR",
})
# Variables that choose the GPUs a process sees: llem sets them from the experiment.
GPU_SELECTION_ENV = frozenset({
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "NVIDIA_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK", "ONEAPI_DEVICE_SELECTOR", "ASCEND_RT_VISIBLE_DEVICES",
})

# What a campaign may set: threads, memory, logging and vLLM's own tuning; none of these
# names a file, a library, a module or a plugin.
ALLOWED_ENGINE_ENV = frozenset({
    "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "TOKENIZERS_PARALLELISM",
    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "CUDA_LAUNCH_BLOCKING",
    "CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_MODULE_LOADING",
    "NCCL_DEBUG", "NCCL_P2P_DISABLE", "NCCL_IB_DISABLE", "NCCL_SHM_DISABLE",
    "NCCL_CUMEM_ENABLE", "NCCL_NVLS_ENABLE", "NCCL_ALGO", "NCCL_PROTO",
    "NCCL_MIN_NCHANNELS", "NCCL_MAX_NCHANNELS",
    "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU",
    "VLLM_CPU_MOE_PREPACK", "VLLM_CPU_SGL_KERNEL", "VLLM_ATTENTION_BACKEND",
    "VLLM_USE_V1", "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_WORKER_MULTIPROC_METHOD",
    "VLLM_LOGGING_LEVEL", "VLLM_CONFIGURE_LOGGING", "VLLM_LOG_STATS_INTERVAL",
    "VLLM_ENGINE_ITERATION_TIMEOUT_S", "VLLM_RPC_TIMEOUT", "VLLM_USE_FLASHINFER_SAMPLER",
    "VLLM_FLASH_ATTN_VERSION", "VLLM_ALLOW_LONG_MAX_MODEL_LEN", "VLLM_SLEEP_WHEN_IDLE",
    "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK",
})


def gpu_env_problem(name: str) -> str | None:
    """Why a campaign may not set ``name`` (a GPU selection) for an engine, or None."""
    if name.upper() in GPU_SELECTION_ENV:
        return (f"{name} is set by llem: it selects GPUs, and an engine runs on the "
                "experiment's GPUs (the ones its meters, pools and locks cover)")
    return None


def code_env_problem(name: str) -> str | None:
    """Why the variable ``name`` is refused whatever the deployment allows, or None."""
    if not ENV_NAME.fullmatch(name):
        return f"{name!r} is not a usable environment variable name"
    upper = name.upper()
    if upper.startswith(_CODE_ENV_PREFIXES) or upper in _CODE_ENV_NAMES:
        return (f"{name} is refused: it makes the launched program load or run other code "
                "(code execution under an allow-listed program)")
    return None


def checked_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` if no entry loads code (see the module); else ValueError. GPU selection is
    refused where a campaign's section is validated (llem sets it in the engine's own)."""
    for k, val in env.items():
        if not ENV_NAME.fullmatch(k) or "\x00" in val:
            raise ValueError(f"{k!r} is not a usable environment variable name/value")
        problem = code_env_problem(k)
        if problem:
            raise ValueError(problem)
    return env


def engine_env_problem(name: str, also_allowed: Collection[str] = (),
                       switch: str = "the deployment's allow-list") -> str | None:
    """Why a campaign may not set ``name`` in an engine's environment, or None.

    ``also_allowed``: names the deployment adds (a trailing ``*`` allows a prefix); the
    floor (:func:`code_env_problem`) holds whatever they say.
    """
    floor = code_env_problem(name) or gpu_env_problem(name)
    if floor:
        return floor
    if name in ALLOWED_ENGINE_ENV:
        return None
    for entry in also_allowed:
        if name == entry or (entry.endswith("*") and name.startswith(entry[:-1])):
            return None
    return (f"{name} is not among the engine variables a campaign may set (threads, memory, "
            f"logging, vLLM's tuning: see README 'Engines'), and {switch} does not allow it")
