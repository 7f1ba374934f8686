"""Helpers for tests against a real ASR server process on loopback.

A server costs a NeMo import, a model load and an interpreter exit (~13 s on 2 cores), so tests
share them: conftest.py's session servers (`asr_server`, `token_asr_server`) for tests that only
talk to one, a module-scoped server for a module that needs its own options, and a server of
its own only for a test that stops or breaks it.
"""

from __future__ import annotations

import asyncio
import subprocess
import wave
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from hypothesis import strategies as st

from nemotron_speech.client import AsrClient
from nemotron_speech.protocol import Error, Transcript
from nemotron_speech.server.app import AsrServer, Health, ServerConfig
from nemotron_speech.server.launcher import AsrServerProcess, start_server

TOKEN = "test-token"


@contextmanager
def running_server(
    model: Path | None,
    log_dir: Path,
    *options: str,
    wait_ready: bool = True,
    extra_env: dict[str, str] | None = None,
) -> Iterator[AsrServerProcess]:
    """The package's launcher (model None: the server's default place), its log in `log_dir`;
    by default it waits until /health says ready; SIGTERM at the end."""
    server = start_server(
        *options,
        model=model,
        log_path=log_dir / "server.log",
        ready=wait_ready,
        extra_env=extra_env,
    )
    try:
        yield server
    finally:
        server.stop(timeout=30)


@contextmanager
def servers_side_by_side(
    model: Path | None, starts: Sequence[tuple[Path, Sequence[str]]]
) -> Iterator[list[AsrServerProcess]]:
    """One server per `(log_dir, options)`, all started before any is waited for: a start is
    mostly one process importing NeMo and loading the model on one core, so on 2 cores they are
    ready far sooner than one after another (two: 13-19 s against 24-26 s on a shared box).
    Nothing else runs meanwhile. Stops whichever started, also when another fails. (Not from
    threads: a child gets SIGTERM when the thread that started it ends, `spawn`'s
    PR_SET_PDEATHSIG.)"""
    with ExitStack() as stack:
        servers = [
            stack.enter_context(running_server(model, log_dir, *options, wait_ready=False))
            for log_dir, options in starts
        ]
        for server in servers:
            server.wait_ready()
        yield servers


def selected_tests_use(request: pytest.FixtureRequest, fixture: str) -> bool:
    """Whether a test this session runs (after -k and other deselection) uses `fixture`,
    directly or through other fixtures."""
    return any(fixture in item.fixturenames for item in request.session.items)


def stop_process(process: subprocess.Popen, sig: int, timeout: float) -> None:
    """Send `sig` to a process the tests started; kill it if it has not exited in `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def pcm16(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


def frames(audio: bytes, size: int = 3200) -> list[bytes]:
    """Split audio into frames of `size` bytes (100 ms by default)."""
    return [audio[i : i + size] for i in range(0, len(audio), size)]


async def events_until_final(client: AsrClient, timeout: float = 30.0) -> list[Transcript | Error]:
    """Every event up to and including the next final (`finalize` true)."""
    events: list[Transcript | Error] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await client.recv()
            events.append(event)
            if isinstance(event, Transcript) and event.finalize:
                return events


async def transcribe(
    url: str, audio: bytes, size: int = 3200, token: str | None = TOKEN, realtime: bool = False
) -> list[Transcript | Error]:
    """Stream `audio` (paced at real time when asked), end, and return every event."""
    client = await AsrClient.connect(url, token=token)
    async with client:
        collector = asyncio.create_task(events_until_final(client))
        for index, frame in enumerate(frames(audio, size)):
            if realtime:
                await asyncio.sleep(len(frame) / 32000 if index else 0)
            await client.send_audio(frame)
        await client.end()
        return await collector


# any JSON value, for fuzzing the parsers and the server
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip


@asynccontextmanager
async def served(model: Path, **options) -> AsyncIterator[AsrServer]:
    """An `AsrServer` on this event loop and a free port, ready; stopped (gracefully) after."""
    server = AsrServer(ServerConfig(model=model, port=0, right_context=1, **options))
    running = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(180):
            while server.health is not Health.READY:
                if running.done():
                    running.result()  # the load failed: raise its error
                await asyncio.sleep(0.05)
        yield server
    finally:
        server.stop()
        await asyncio.wait_for(running, 60)


def url(server: AsrServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


async def flushed(client: AsrClient) -> None:
    """Flush and wait for the answer: then every frame sent before is in the engine (a session
    holds audio short of a chunk until something like this asks for it)."""
    await client.flush()
    async for event in client:
        if isinstance(event, Transcript) and event.is_final and not event.finalize:
            return
    raise AssertionError(f"closed before the flush's answer: {client.close_code}")
