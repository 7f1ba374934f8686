"""One real vLLM OpenAI server (CPU, fixture model) per test session, started as users start it.

conftest.py registers the fixture once for every module, so tests just ask for it:

    @pytest.mark.slow
    def test_something(vllm_server):
        client = OpenAI(base_url=vllm_server.base_url, api_key="x")
        ... model=vllm_server.model ...

The server needs the separate vLLM environment (`bash .ci/setup_vllm.sh`), found through
NEMOTRON_VLLM_PYTHON; when that variable is unset the tests using it are skipped on a developer's
machine and fail in CI (`tools.unavailable`), and when the server fails to start they fail. The
fixture model only answers its scripted prompts: use `nemotron_speech.testing.fixture_llm.CASES`.

The server is the literal `nemotron-speech serve-llm --target cpu-fixture` command, so the
session's one vLLM start also covers the command (test_vllm_fixture.py reads its log), and the
fixture checks the command's documented stop when the session ends: SIGTERM ends it with status
0 and its vLLM with it. A second vLLM start for the command alone cost ~25 s of CI.

Do not import the fixture into a test module: pytest would register a second "session" fixture
for that module, start another vLLM (~20 s, ~3 GB) and keep it running until the session ends.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_fixtures import selected_tests_use
from tools import unavailable

from nemotron_speech.child_server import ServerStartError, spawn
from nemotron_speech.llm.launcher import RunningServer, free_port, is_healthy
from nemotron_speech.llm.recipe import build_command
from nemotron_speech.testing.fixture_llm import ensure_fixture_model

VLLM_PYTHON_ENV = "NEMOTRON_VLLM_PYTHON"


def spawn_fixture_server(python: str, log_dir: Path) -> RunningServer:
    """Build (or reuse) the fixture model and start `nemotron-speech serve-llm --target
    cpu-fixture` on a free port, without waiting for it (`wait_fixture_server`).

    The returned server's `base_url` and `model` are all a client needs, its `spec` is the
    command's vLLM line, and `stop()` sends the command SIGTERM.
    """
    model_dir = ensure_fixture_model(python=python)
    spec = build_command("cpu-fixture", str(model_dir), port=free_port(), python=python)
    command = [sys.executable, "-m", "nemotron_speech.cli", "serve-llm", "--target", "cpu-fixture",
               "--port", str(spec.port), "--python", python, "--model", str(model_dir)]  # fmt: skip
    log_path = log_dir / "serve-llm.log"
    return RunningServer("serve-llm", spawn(command, dict(os.environ), log_path), log_path,
                         spec=spec)  # fmt: skip


def wait_fixture_server(server: RunningServer) -> RunningServer:
    """Return once the command reports vLLM ready (warmed up), and say so in `started_in_s`;
    raise `ServerStartError` if it exits first."""
    if not server.started_in_s:
        server.started_in_s = server.wait_until(
            lambda: "vLLM ready after" in server.log(), "ready", 300
        )
    return server


@pytest.fixture(scope="session")
def vllm_started() -> Iterator[RunningServer]:
    """The session's command, started but not yet ready; without the vLLM venv: skipped, or
    failed in CI."""
    python = os.environ.get(VLLM_PYTHON_ENV)
    if not python:
        unavailable(f"{VLLM_PYTHON_ENV} is unset: create the vLLM venv with .ci/setup_vllm.sh")
    with tempfile.TemporaryDirectory(prefix="vllm-fixture-") as log_dir:
        server = spawn_fixture_server(python, Path(log_dir))
        try:
            yield server
        finally:
            server.stop()  # SIGTERM to the command, as `docker stop` or systemd send it
        if server.started_in_s:  # (a failed start is its tests' error)
            # the command's only stop in the suite, so its check is here: exit 0, no vLLM left
            assert server.process.returncode == 0, server.log_tail()
            assert not is_healthy(server.base_url), "vLLM still answers after serve-llm stopped"


@pytest.fixture(scope="session", name="vllm_server")
def vllm_server_fixture(request, vllm_started) -> RunningServer:
    """Session-wide fixture server, ready. vLLM's start keeps about one core busy for 20-30 s,
    so when the selected tests use the session's ASR servers too, those start meanwhile
    (`conftest.session_asr_servers`, which then waits for both)."""
    if selected_tests_use(request, "session_asr_servers"):
        with contextlib.suppress(ServerStartError):  # the ASR tests report it
            request.getfixturevalue("session_asr_servers")
    return wait_fixture_server(vllm_started)
