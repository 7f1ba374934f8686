"""The tools tests need from outside this environment (Chromium, the vLLM and lint environments,
network namespaces): what a test does when one is missing."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """CI (`CI=true`, as `.ci/run` runs) installs every tool, so there a missing one fails the
    test; elsewhere the test is skipped with `reason`, which names the command that installs it."""
    (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
