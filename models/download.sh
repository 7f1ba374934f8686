#!/usr/bin/env sh
# Download every model the compose stack needs into this folder (see README.md here).
# Arguments are passed on: ./models/download.sh llm --llm-variant fp8
set -eu
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then set -- all; fi
exec python -m nemotron_speech.cli download "$@" --models-dir models
