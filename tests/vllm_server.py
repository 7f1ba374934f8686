"""One real vLLM OpenAI server (CPU, fixture model) per test session, started through our recipe.

conftest.py registers the fixture once for every module, so tests just ask for it:

    @pytest.mark.slow
    def test_something(vllm_server):
        client = OpenAI(base_url=vllm_server.base_url, api_key="x")
        ... model=vllm_server.model ...

The server needs the separate vLLM environment (`bash .ci/setup_vllm.sh`), found through
NEMOTRON_VLLM_PYTHON; when that variable is unset the tests using it are skipped on a developer's
machine and fail in CI (`tools.unavailable`), and when the server fails to start they fail. The
fixture model only answers its scripted prompts: use `nemotron_speech.testing.fixture_llm.CASES`.

Do not import the fixture into a test module: pytest would register a second "session" fixture
for that module, start another vLLM (~20 s, ~3 GB) and keep it running until the session ends.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tools import unavailable

from nemotron_speech.llm.launcher import RunningServer, free_port, start_server
from nemotron_speech.llm.recipe import build_command
from nemotron_speech.testing.fixture_llm import ensure_fixture_model

VLLM_PYTHON_ENV = "NEMOTRON_VLLM_PYTHON"


def start_fixture_server(python: str, log_dir: Path) -> RunningServer:
    """Build (or reuse) the fixture model and serve it with the cpu-fixture recipe on a free port.

    The returned server's `base_url` and `model` are all a client needs; call `stop()` when done.
    """
    model_dir = ensure_fixture_model(python=python)
    spec = build_command("cpu-fixture", str(model_dir), port=free_port(), python=python)
    return start_server(spec, log_path=log_dir / "vllm.log", timeout=300)


@pytest.fixture(scope="session", name="vllm_server")
def vllm_server_fixture() -> Iterator[RunningServer]:
    """Session-wide fixture server; without the vLLM venv: skipped, or failed in CI."""
    python = os.environ.get(VLLM_PYTHON_ENV)
    if not python:
        unavailable(f"{VLLM_PYTHON_ENV} is unset: create the vLLM venv with .ci/setup_vllm.sh")
    with tempfile.TemporaryDirectory(prefix="vllm-fixture-") as log_dir:
        server = start_fixture_server(python, Path(log_dir))
        try:
            yield server
        finally:
            server.stop()
