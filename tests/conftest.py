"""Shared fixtures: the committed test model, its speech, and engines on it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from server_fixtures import TOKEN, selected_tests_use, servers_side_by_side
from vllm_server import (  # noqa: F401  (one vLLM server for the whole session)
    VLLM_PYTHON_ENV,
    vllm_server_fixture,
    vllm_started,
    wait_fixture_server,
)

from nemotron_speech.child_server import ServerStartError

# one thread: on 2 shared cores, two torch threads can make steps 10-30x slower
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "tests" / "assets" / "asr"

# the tools ./setup.sh installs, found without any configuration
if (ROOT / ".venv-vllm" / "bin" / "python").exists():
    os.environ.setdefault("NEMOTRON_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python"))
if (ROOT / ".lint-tools").is_dir():
    os.environ.setdefault("NEMOTRON_LINT_TOOLS", str(ROOT / ".lint-tools"))


@pytest.fixture(scope="session")
def asr_model_path() -> Path:
    return ASSETS / "tiny-asr.nemo"


@pytest.fixture(scope="session")
def speech_wavs() -> list[Path]:
    return sorted((ASSETS / "speech").glob("[0-9][0-9].wav"))


# One ASR server of each kind for the whole session: each costs ~13 s to start and stop (NeMo
# import, model load, interpreter exit), and most modules only talk to one. Tests on them measure
# deltas of their metrics and read only the log they caused; a test that stops, fills or
# reconfigures a server starts its own.
@pytest.fixture(scope="session")
def session_asr_servers(request, asr_model_path, tmp_path_factory):
    """Both session servers, started side by side when the first is asked for; and when the
    selected tests use the session's vLLM too, its start as well, and this waits for it: it
    keeps about one core busy for 20-30 s, and both servers are ready sooner than that (on 2
    cores, all three: 22-24 s against 30 s one after the other)."""
    vllm = None
    if os.environ.get(VLLM_PYTHON_ENV) and selected_tests_use(request, "vllm_server"):
        with contextlib.suppress(Exception):  # a vLLM that cannot start fails its own tests
            vllm = request.getfixturevalue("vllm_started")
    starts = [
        (tmp_path_factory.mktemp("asr"), ()),
        (tmp_path_factory.mktemp("asr-token"), ("--auth-token", TOKEN)),
    ]
    with servers_side_by_side(asr_model_path, starts) as servers:
        if vllm is not None:
            with contextlib.suppress(ServerStartError):  # as above
                wait_fixture_server(vllm)
        yield servers


@pytest.fixture(scope="session")
def asr_server(session_asr_servers):
    """The ASR server on the test model with its defaults (no token, right context 1)."""
    return session_asr_servers[0]


@pytest.fixture(scope="session")
def token_asr_server(session_asr_servers):
    """The same with `--auth-token TOKEN`."""
    return session_asr_servers[1]
