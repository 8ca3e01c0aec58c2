#!/usr/bin/env bash
# The engine's own environment for `backend: llamacpp` on a CPU: llama-cpp-python's
# OpenAI-compatible server (the [server] extra) in .venv-llamacpp, next to (never inside)
# llem's .venv. PyPI holds only its source: it is built here, for any x86-64 CPU
# (GGML_NATIVE=OFF: no instructions of this machine baked in), without BLAS or curl (the
# model is a local GGUF file; nothing is downloaded at run time), on 2 build jobs.
# A folder of wheels already built from that source may be named in LLAMACPP_WHEELS
# (pip takes a wheel of the pinned version from there instead of building it).
# Usage: scripts/setup_llamacpp_env.sh [venv folder]   (default .venv-llamacpp)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-llamacpp}"
SPEC="${LLAMACPP_SPEC:-llama-cpp-python[server]==0.3.36}"
PY3="${PYTHON3:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp.server" 2> /dev/null; then
  echo "llama.cpp environment ready: $VENV ($("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)'))"
  exit 0
fi
command -v c++ > /dev/null || { echo "no C++ compiler (c++): llama-cpp-python is built from source" >&2; exit 1; }
"$PY3" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
FIND=()
if [ -n "${LLAMACPP_WHEELS:-}" ]; then FIND=(--find-links "$LLAMACPP_WHEELS"); fi
start=$(date +%s)
"$VENV/bin/python" -m pip install -q "${FIND[@]}" "$SPEC"
"$VENV/bin/python" -c "import llama_cpp, llama_cpp.server.app; print('llama.cpp environment ready:', '$VENV', llama_cpp.__version__, 'in', $(date +%s) - $start, 's')"
