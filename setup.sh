#!/usr/bin/env bash
# Set up a development/serving environment from scratch on Linux: system tools, .venv with the
# project and its extras, and (unless NEMOTRON_SKIP_VLLM=1) a separate .venv-vllm with the CPU
# build of vLLM that the LLM tests serve their fixture model with.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq espeak-ng sox >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng sox >/dev/null
    fi
fi

python3 -m venv .venv
# torch is pinned first so NeMo's unpinned torch cannot pull a multi-GB CUDA build on a CPU box;
# on a GPU box install your CUDA torch build before running this script
.venv/bin/pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install -q "torch==${NEMOTRON_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/pip install -q -e ".[asr,bot,dev]"

if [ "${NEMOTRON_SKIP_VLLM:-0}" != 1 ] && [ -x .ci/setup_vllm.sh ]; then
    .ci/setup_vllm.sh .venv-vllm
fi
echo "setup done: .venv ready"
