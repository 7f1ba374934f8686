"""`--workers N`: several server processes behind one port (`server/workers.py`) sharing one
engine process (`--engine-process`, `server/engine_process.py`), or K of them
(`--engine-processes K`): the layout for hundreds of streams on a GPU.

One server of two processes sharing one engine process for the module; tests that end a server
start their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from server_fixtures import (
    events_until_final,
    flushed,
    frames,
    pcm16,
    running_server,
    transcribe,
)

from nemotron_speech.child_server import ServerStartError
from nemotron_speech.client import AsrClient, AsrConnectionError
from nemotron_speech.protocol import CloseCode, Transcript
from nemotron_speech.server.commands import ENGINE_FAILURE
from nemotron_speech.server.launcher import AsrServerProcess, start_server
from nemotron_speech.testing.sentences import SENTENCES

MAX_STREAMS = 16  # 16 connections all hashed to one of two processes: odds 2 in 65,536


@pytest.fixture(scope="module")
def server(asr_model_path, tmp_path_factory):
    options = ["--workers", "2", "--engine-process", "--max-streams", str(MAX_STREAMS)]
    with running_server(asr_model_path, tmp_path_factory.mktemp("workers"), *options) as server:
        yield server


@pytest.fixture(scope="module")
def audio(speech_wavs) -> list[bytes]:
    return [pcm16(path) for path in speech_wavs]


def spawned_children(pid: int) -> list[int]:
    """The processes `pid` spawned through multiprocessing (not its resource tracker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if parent == pid and b"spawn_main" in command:
            pids.append(int(entry.name))
    return sorted(pids)


def worker_pids(server: AsrServerProcess) -> list[int]:
    """The front processes: the server's children that listen on its port."""
    children = spawned_children(server.process.pid)
    return [pid for pid in children if connections_of(pid, server.port, state="0A")]


def engine_pids(server: AsrServerProcess) -> set[int]:
    return set(spawned_children(server.process.pid)) - set(worker_pids(server))


def connections_of(pid: int, port: int, state: str = "01") -> int:
    """TCP sockets on local `port` in `state` (01 established, 0A listening) held by `pid`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state and fields[9] in inodes:
                count += 1
    return count


async def open_clients(server: AsrServerProcess, count: int) -> list[AsrClient]:
    return [await AsrClient.connect(server.url) for _ in range(count)]


async def finish(client: AsrClient, audio: bytes) -> Transcript:
    async with client:
        for frame in frames(audio):
            await client.send_audio(frame)
        await client.end()
        return (await events_until_final(client))[-1]


async def test_one_port_spreads_streams_over_processes_under_one_limit(server, audio):
    server.wait_for_metric("asr_streams_open", 0)
    connections = server.metric("asr_connections_total")
    clients = await open_clients(server, MAX_STREAMS)
    pids = worker_pids(server)
    assert len(pids) == 2
    assert len(spawned_children(server.process.pid)) == 3  # and their engine process
    held = [connections_of(pid, server.port) for pid in pids]
    assert sum(held) == MAX_STREAMS and min(held) > 0, held
    status, body = server.http("/health")
    assert (status, json.loads(body)) == (200, {"status": "ready", "streams": MAX_STREAMS})
    with pytest.raises(AsrConnectionError) as error:  # the limit is the server's, not a process's
        await AsrClient.connect(server.url)
    assert error.value.code == CloseCode.TRY_AGAIN_LATER
    assert error.value.reason == f"server is at its limit of {MAX_STREAMS} streams"
    finals = await asyncio.gather(*(finish(c, a) for c, a in zip(clients, audio, strict=True)))
    for index, final in enumerate(finals):
        assert final == Transcript(SENTENCES[index], is_final=True, finalize=True)
    server.wait_for_metric("asr_streams_open", 0)  # summed over both processes
    assert server.metric("asr_connections_total") - connections == MAX_STREAMS
    assert server.metric('asr_transcripts_total{kind="final"}') >= MAX_STREAMS


async def test_a_dead_process_costs_only_its_streams_and_is_replaced(server, audio):
    server.wait_for_metric("asr_streams_open", 0)
    clients = await open_clients(server, 8)
    pids = worker_pids(server)
    victim = max(pids, key=lambda pid: connections_of(pid, server.port))
    lost = connections_of(victim, server.port)
    assert lost > 0
    os.kill(victim, signal.SIGKILL)
    results = await asyncio.gather(
        *(finish(c, a) for c, a in zip(clients, audio, strict=False)), return_exceptions=True
    )
    survived = [(i, r) for i, r in enumerate(results) if isinstance(r, Transcript)]
    assert len(survived) == 8 - lost
    for index, final in survived:
        assert final == Transcript(SENTENCES[index], is_final=True, finalize=True)
    server.wait_until(
        lambda: len(worker_pids(server)) == 2 and victim not in worker_pids(server),
        "a replacement process",
        60,
    )
    server.wait_ready(180)
    assert json.loads(server.http("/health")[1])["streams"] == 0  # the dead one's seats freed
    server.wait_for_metric("asr_streams_open", 0)  # and the engine freed its streams
    events = await transcribe(server.url, audio[3], token=None)
    assert events[-1] == Transcript(SENTENCES[3], is_final=True, finalize=True)
    assert "restarting it" in server.log()


async def test_a_dead_engine_process_ends_its_streams_with_1011_and_the_server(
    asr_model_path, tmp_path, audio
):
    """With `--engine-processes 2` each front has an engine process of its own. One dying costs
    its front's streams (the engine-failure close); the server then exits non-zero for its
    process manager to restart it, and the other front's streams get their finals on the way."""
    options = ("--workers", "2", "--engine-processes", "2", "--max-streams", str(MAX_STREAMS))
    with running_server(asr_model_path, tmp_path, *options) as server:
        assert len(spawned_children(server.process.pid)) == 4  # two fronts, two engines
        clients = await open_clients(server, MAX_STREAMS)
        held = [connections_of(pid, server.port) for pid in worker_pids(server)]
        for client, clip in zip(clients, audio, strict=True):
            await client.send_audio(clip[:16000])
        os.kill(min(engine_pids(server)), signal.SIGKILL)
        failed = 0
        for client in clients:
            events = [event async for event in client]
            if client.close_code == 1011:
                assert (events[-1], client.close_reason) == (ENGINE_FAILURE[0], "engine failure")
                failed += 1
            else:
                assert client.close_code == CloseCode.GOING_AWAY
                assert events[-1].is_final and events[-1].finalize
        assert failed in held  # exactly one front's streams
        assert server.process.wait(60) == 1
        assert "exited (code -9); stopping" in server.log()


async def test_sigterm_to_every_process_still_finalizes_every_stream(
    asr_model_path, tmp_path, audio
):
    options = ("--workers", "2", "--engine-process")
    with running_server(asr_model_path, tmp_path, *options) as server:
        clients = await open_clients(server, 6)
        for client, clip in zip(clients, audio, strict=False):
            for frame in frames(clip):
                await client.send_audio(frame)
            await flushed(client)
        seconds = sum(len(clip) for clip in audio[:6]) / 32000
        server.wait_for_metric("asr_audio_seconds_total", seconds)
        os.killpg(server.process.pid, signal.SIGTERM)  # as systemd stops it: every process
        for index, client in enumerate(clients):
            events = [event async for event in client]
            assert events[-1] == Transcript(SENTENCES[index], is_final=True, finalize=True)
            assert (client.close_code, client.close_reason) == (1001, "server shutting down")
        assert server.process.wait(60) == 0
        assert server.log().count(": stopped") == 2  # each process stopped gracefully


@pytest.mark.parametrize("layout", [(), ("--engine-process",)], ids=["threads", "engine-process"])
def test_a_model_that_cannot_load_stops_the_server(tmp_path, layout):
    broken = tmp_path / "broken.nemo"
    broken.write_bytes(b"not a tar archive")
    with pytest.raises(ServerStartError) as error:
        start_server("--workers", "2", *layout, model=broken, log_path=tmp_path / "server.log")
    log = (tmp_path / "server.log").read_text()
    assert "exited with code 1" in str(error.value)
    if layout:  # the shared engine process says why, and its end stops the server
        assert "[engine]: the engine failed to load" in log
        assert "; stopping" in log  # the engine process or a front that got its error, first
    else:
        assert "before it was ready; stopping" in log
        assert "[worker 0]: server failed:" in log or "[worker 1]: server failed:" in log


def test_more_engine_processes_than_workers_is_a_clear_error(asr_model_path):
    done = subprocess.run(
        [sys.executable, "-m", "nemotron_speech.server", "--workers", "2",
         "--engine-processes", "3", "--model", str(asr_model_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--engine-processes 3 needs at least as many --workers" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_a_clear_error(asr_model_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "nemotron_speech.server", "--workers", "2", "--port", str(port),
             "--model", str(asr_model_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
