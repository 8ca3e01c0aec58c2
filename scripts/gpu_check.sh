#!/usr/bin/env bash
# GPU check: real NVML energy on one GPU, no download. Under 8 minutes on a modern GPU.
# Exits non-zero if NVML finds no GPU. Usage: scripts/gpu_check.sh [--skip-8b]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" scripts/gpu_check.py "$@"
