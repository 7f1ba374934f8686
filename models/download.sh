#!/usr/bin/env sh
# Download every model the compose stack needs into this folder (see README.md here).
# Arguments are passed on: ./models/download.sh llm --llm-variant fp8
# The Python is $NEMOTRON_PYTHON, else the clone's .venv (README: Install), else python3; it must
# have nemotron-speech with the `download` extra installed.
set -eu
cd "$(dirname "$0")/.."
python=${NEMOTRON_PYTHON:-}
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
if ! "$python" -c "import nemotron_speech" 2>/dev/null; then
    echo "models/download.sh: $python has no nemotron_speech; install it from this clone:" \
        "python3 -m venv .venv && .venv/bin/pip install -e '.[download]'" >&2
    exit 2
fi
if [ $# -eq 0 ]; then set -- all; fi
exec "$python" -m nemotron_speech.cli download "$@" --models-dir models
