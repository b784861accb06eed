#!/usr/bin/env bash
# Run first on a GPU machine (no network needed): bf16 LoRA, 4-bit QLoRA, and vLLM with a LoRA
# adapter, each one training step / one generation on a tiny model built here (or --model PATH).
# Prints PASS/FAIL/SKIP per check; exits 1 if any failed, 0 otherwise (all SKIP without CUDA).
#   scripts/gpu_check.sh [--model PATH] [--skip-vllm] [--workdir DIR]
# Needs srscale with its GPU extra (pip install -c constraints.txt -e ".[gpu]") and, for the vLLM
# check, its environment (scripts/setup_vllm.sh --gpu). PYTHON picks the interpreter (default: .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_check.py "$@"
