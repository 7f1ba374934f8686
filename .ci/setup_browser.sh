#!/usr/bin/env bash
# Headless Chromium for tests/test_browser_e2e.py (Debian's package: no browser download at test
# time). The test drives it over the DevTools protocol with `websockets`, so no Node is needed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    chromium --version
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
chromium --version
