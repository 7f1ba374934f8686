"""Shared fixtures: the committed test model, its speech, and engines on it."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest
from server_fixtures import TOKEN, running_server
from vllm_server import vllm_server_fixture  # noqa: F401  (one vLLM server for the whole session)

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
def session_asr_servers(asr_model_path, tmp_path_factory):
    """Both session servers, started side by side when the first is asked for: a start is mostly
    one process importing NeMo and loading the model on one core, so on 2 cores both are ready
    sooner (measured on a shared box: 13-19 s against 24-26 s one after the other). Nothing else
    runs meanwhile. (Not from threads: a child gets SIGTERM when the thread that started it
    ends, `child_server`'s PR_SET_PDEATHSIG.)"""
    kinds = {"asr": (), "asr-token": ("--auth-token", TOKEN)}
    with ExitStack() as stack:  # stops whichever started, also when the other fails
        servers = [
            stack.enter_context(
                running_server(asr_model_path, tmp_path_factory.mktemp(name), *options,
                               wait_ready=False)
            )
            for name, options in kinds.items()
        ]  # fmt: skip
        for server in servers:
            server.wait_ready()
        yield servers


@pytest.fixture(scope="session")
def asr_server(session_asr_servers):
    """The ASR server on the test model with its defaults (no token, right context 1)."""
    return session_asr_servers[0]


@pytest.fixture(scope="session")
def token_asr_server(session_asr_servers):
    """The same with `--auth-token TOKEN`."""
    return session_asr_servers[1]
