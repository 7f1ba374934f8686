"""Helpers for tests against a real ASR server process on loopback.

Each test module starts ONE server (module-scoped fixture) because a server costs a NeMo import
and a model load (~10 s on 2 cores); tests inside the module share it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from nemotron_speech.client import AsrClient
from nemotron_speech.protocol import Error, Transcript

TOKEN = "test-token"


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except urllib.error.URLError as exc:  # not listening (yet, or any more)
            return 0, str(exc)

    def metric(self, name: str) -> float:
        """One sample of /metrics, e.g. `asr_streams_open` or `asr_x_total{kind="final"}`."""
        _, text = self.http("/metrics")
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == name:
                return float(value)
        raise KeyError(f"{name} not in /metrics:\n{text}")

    def wait_for_metric(self, name: str, value: float, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while abs(self.metric(name) - value) > 1e-6:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} = {self.metric(name)}, expected {value}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while self.http("/health")[0] != 200:
            assert time.monotonic() < deadline, f"server never ready:\n{self.log()}"
            assert self.process.poll() is None, f"server exited:\n{self.log()}"
            time.sleep(0.2)


@contextmanager
def running_server(
    model: Path, log_dir: Path, *options: str, wait_ready: bool = True
) -> Iterator[RunningServer]:
    """Start `python -m nemotron_speech.server` on a free port; wait until it listens, and by
    default until /health says ready."""
    log_path = log_dir / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "nemotron_speech.server", "--model", str(model)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*command, "--port", "0", "--right-context", "1", *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        server = RunningServer(process, _wait_for_port(process, log_path), log_path)
        if wait_ready:
            server.wait_ready()
        yield server
    finally:
        stop_process(process, signal.SIGTERM, timeout=30)


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


def _wait_for_port(process: subprocess.Popen, log_path: Path) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"listening on ws://[^:]+:(\d+)", log_path.read_text())
        if match:
            return int(match.group(1))
        assert process.poll() is None, f"server exited:\n{log_path.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"server did not start listening:\n{log_path.read_text()}")


def pcm16(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


def frames(audio: bytes, size: int = 3200) -> list[bytes]:
    """Split audio into frames of `size` bytes (100 ms by default)."""
    return [audio[i : i + size] for i in range(0, len(audio), size)]


async def events_until_final(client: AsrClient, timeout: float = 30.0) -> list[Transcript | Error]:
    """Every event up to and including the next hard final."""
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
