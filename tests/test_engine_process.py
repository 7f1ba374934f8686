"""The engine process's hub (`server/engine_process.py`) with real connections: after a step it
waits for the follow-up write of a front whose writer was blocked on it, and only of those; on
SIGTERM it waits for its fronts, but not forever, and SIGTERM while it loads is a stop (exit 0),
not a load failure."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from multiprocessing.connection import Client, Listener

from nemotron_speech.server import engine_process
from nemotron_speech.server.commands import Feed
from nemotron_speech.server.engine_process import SEND_BUFFER_BYTES, EngineInfo, _Hub


def hub_with_fronts(path, count: int) -> tuple[_Hub, list]:
    """A loaded hub listening at `path`, and `count` fronts connected and admitted."""
    address, key = str(path), os.urandom(16)
    hub = _Hub(Listener(address, authkey=key), shared=True)
    hub.loaded(EngineInfo(160.0, 1, "cpu", (1,), ""))
    fronts = [Client(address, authkey=key) for _ in range(count)]
    deadline = time.monotonic() + 10
    while len(hub._fronts) < count and time.monotonic() < deadline:
        hub.receive(0.1)
    return hub, fronts


def test_after_a_step_the_follow_up_of_a_blocked_front_joins_and_no_other(monkeypatch, tmp_path):
    monkeypatch.setattr(engine_process, "FOLLOW_UP_S", 5.0)  # long: no timing in this test
    hub, (busy, idle) = hub_with_fronts(tmp_path / "engine", 2)
    busy.send([Feed(1, bytes(2 * SEND_BUFFER_BYTES))])  # more than its buffer: it waited
    idle.send([Feed(2, b"\0\0")])

    def follow_up() -> None:
        time.sleep(0.2)
        busy.send([Feed(1, b"\1\1")])
        idle.send([Feed(2, b"\2\2")])

    threading.Thread(target=follow_up).start()
    started = time.monotonic()
    commands = hub.receive(0)  # the drain after a step
    assert time.monotonic() - started < 4  # it came back with the follow-up, not at 5 s
    assert [(c.stream_id, len(c.data)) for c in commands] == [
        (1, 2 * SEND_BUFFER_BYTES), (2, 2), (1, 2),
    ]  # fmt: skip
    time.sleep(0.1)
    assert hub.receive(0) == [Feed(2, b"\2\2")]  # the idle front's: not waited for
    busy.close()
    idle.close()


def test_sigterm_waits_for_the_fronts_but_not_forever(monkeypatch, tmp_path):
    """A front that never leaves (stuck, or its process exiting while it waits for this one)
    cannot keep the engine process alive past the grace."""
    exits = []
    monkeypatch.setattr(engine_process, "TERM_GRACE_S", 0.2)
    monkeypatch.setattr(os, "_exit", exits.append)
    hub, fronts = hub_with_fronts(tmp_path / "engine", 1)
    hub.stop_when_alone()  # what SIGTERM calls: a front is connected, so it waits
    assert exits == []
    time.sleep(1.0)
    assert exits == [0]
    fronts[0].close()


def _slow_load():
    """A model load that takes longer than the test (module level: a spawned child imports it)."""
    time.sleep(60)


def test_sigterm_while_loading_exits_0(tmp_path):
    address = tmp_path / "engine"
    process = multiprocessing.get_context("spawn").Process(
        target=engine_process.engine_main,
        args=(_slow_load, str(address), os.urandom(16), (0.0, 1), logging.INFO, True),
    )
    process.start()
    try:
        deadline = time.monotonic() + 60
        while not address.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert address.exists(), "the engine process never listened"
        time.sleep(1.0)  # its SIGTERM handler is installed right after it listens
        process.terminate()
        process.join(30)
        assert process.exitcode == 0  # was 1: the stop was taken for a failed load
    finally:
        process.kill()
        process.join()
