"""Where the scheduler (`scheduler.py`) runs: on a thread of the server's process, or in a
process of its own (`--engine-process`); the connections talk to either through one interface.

On a thread, the engine's step shares the interpreter's lock with the event loop: each time the
step releases it (every torch call does), it must win it back from a loop busy with hundreds of
connections, so steps stretch at scale (docs/server.md has the measurement). In a process of its
own the scheduler has an interpreter to itself; commands cross a pipe in one batch per write
(each stream's audio joined: `coalesce`), and events come back in one batch per step, with the
metric updates the scheduler made (replayed into the server's registry, so `/metrics` is
unchanged). A `--workers` server shares its engine process (or `--engine-processes K` of them)
among its processes (docs/server.md says why).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection
from typing import Any

from nemotron_speech.server.commands import (
    ENGINE_FAILURE,
    Close,
    Command,
    Consumed,
    Event,
    Feed,
    Finalize,
    Flush,
    Interim,
    Open,
    Opened,
    Stop,
    StreamClosed,
)
from nemotron_speech.server.engine_process import (
    SEND_BUFFER_BYTES,
    EngineInfo,
    engine_main,
    replay,
)
from nemotron_speech.server.metrics import ServerMetrics
from nemotron_speech.server.scheduler import Scheduler

__all__ = [
    "Consumed",
    "EngineInfo",
    "EngineProcess",
    "Event",
    "InferenceProcess",
    "InferenceThread",
    "Interim",
    "StreamClosed",
]

log = logging.getLogger(__name__)

Sink = Callable[[Event], None]  # called on the event loop
CONNECT_TIMEOUT_S = 120.0  # for the engine process's listener to appear


class _Inference:
    """The connections' side: opens streams, sends commands, routes events to their sinks."""

    def __init__(self, metrics: ServerMetrics, loop: asyncio.AbstractEventLoop):
        self._metrics = metrics
        self._loop = loop
        self._sinks: dict[int, Sink] = {}  # key -> the connection's sink
        self._keys: dict[int, int] = {}  # stream id -> key
        self._opening: dict[int, asyncio.Future] = {}
        self._next_key = 0
        self._failure: BaseException | None = None  # the engine is gone
        self.loaded: asyncio.Future = loop.create_future()  # EngineInfo, or the load error

    async def open(self, sink: Sink) -> int:
        """Open an engine stream whose events go to `sink`; returns its id."""
        if self._failure is not None:
            raise self._failure
        key, self._next_key = self._next_key, self._next_key + 1
        self._sinks[key] = sink
        self._opening[key] = self._loop.create_future()
        self._submit(Open(key))
        return await self._opening[key]

    def feed(self, stream_id: int, data: bytes) -> None:
        self._submit(Feed(stream_id, data))

    def finalize(self, stream_id: int, reset: bool = False) -> None:
        """The words since the last final; `reset` then starts the stream clean."""
        self._submit(Finalize(stream_id, reset, time.perf_counter()))

    def flush(self, stream_id: int) -> None:
        """The current text; nothing changes."""
        self._submit(Flush(stream_id))

    def close(self, stream_id: int) -> None:
        self._sinks.pop(self._keys.pop(stream_id, None), None)
        self._submit(Close(stream_id))

    def _submit(self, command: Command) -> None:
        raise NotImplementedError

    def _dispatch(self, events: list[tuple[int, Event]]) -> None:
        """On the loop: each event to its connection (a closed one's are dropped)."""
        for key, event in events:
            if isinstance(event, Opened):
                self._keys[event.stream_id] = key
                _settle(self._opening.pop(key), event.stream_id, None)
            elif (sink := self._sinks.get(key)) is not None:
                sink(event)
                if isinstance(event, StreamClosed):
                    del self._sinks[key]

    def _fail_all(self, error: BaseException) -> None:
        """On the loop, when the engine is gone: end every stream with 1011, fail what waits."""
        self._failure = error
        _settle(self.loaded, None, error)
        for future in self._opening.values():
            _settle(future, None, error)
        for sink in self._sinks.values():
            for event in ENGINE_FAILURE:
                sink(event)
        self._opening.clear()
        self._sinks.clear()


class InferenceThread(_Inference):
    """The scheduler on a thread of this process (the default; in-process tests reach
    `engine`)."""

    def __init__(
        self,
        load_engine: Callable[[], Any],
        metrics: ServerMetrics,
        loop: asyncio.AbstractEventLoop,
        batch_wait: float = 0.0,
        max_batch: int = 1024,
    ):
        super().__init__(metrics, loop)
        self._load_engine = load_engine
        self._options = (batch_wait, max_batch)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="asr-inference", daemon=True)
        self.engine: Any = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the scheduler finish its queued commands and exit."""
        self._commands.put(Stop())
        self._thread.join(timeout)

    def _submit(self, command: Command) -> None:
        self._commands.put(command)

    def _main(self) -> None:
        try:
            self.engine = self._load_engine()
            info = EngineInfo.of(self.engine)
        except BaseException as exc:  # report every load failure to the loop, then end
            self._loop.call_soon_threadsafe(_settle, self.loaded, None, exc)
            return
        self._loop.call_soon_threadsafe(_settle, self.loaded, info, None)
        Scheduler(self.engine, self._metrics, self._post, *self._options).serve(self._receive)

    def _post(self, events: list[tuple[int, Event]]) -> None:
        if events:
            self._loop.call_soon_threadsafe(self._dispatch, events)

    def _receive(self, timeout: float) -> list:
        try:
            commands = [self._commands.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except queue.Empty:
                return commands


class InferenceProcess(_Inference):
    """The scheduler in an engine process (`engine_process.py`): this server's own, or the one
    a `--workers` server shares (`engine_address`: its listener's address and auth key)."""

    def __init__(
        self,
        load_engine: Callable[[], Any],
        metrics: ServerMetrics,
        loop: asyncio.AbstractEventLoop,
        batch_wait: float = 0.0,
        max_batch: int = 1024,
        on_failure: Callable[[], None] = lambda: None,
        engine_address: tuple[str, bytes] | None = None,
    ):
        super().__init__(metrics, loop)
        self._own: EngineProcess | None = None
        if engine_address is None:
            self._own = EngineProcess(load_engine, (batch_wait, max_batch), shared=False)
            engine_address = self._own.address, self._own.authkey
        self._address, self._authkey = engine_address
        self._on_failure = on_failure
        self._pipe: Connection | None = None
        self._connected = threading.Event()
        self._batch: list[Command] = []  # commands of this loop iteration
        self._outgoing: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False

    def start(self) -> None:
        if self._own is not None:
            self._own.start()
        threading.Thread(target=self._send_forever, name="asr-engine-send", daemon=True).start()
        threading.Thread(target=self._read_forever, name="asr-engine-read", daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is queued, leave the engine process (its streams of ours are closed), and
        end our own engine process."""
        self._stopping = True
        self._send_batch()
        self._outgoing.put(None)
        if self._own is not None:
            self._own.join(timeout)

    def _submit(self, command: Command) -> None:
        """Batch the commands of one loop iteration into one message (one pickle, one write)."""
        if not self._batch:
            self._loop.call_soon(self._send_batch)
        self._batch.append(command)

    def _send_batch(self) -> None:
        if self._batch:
            self._outgoing.put(self._batch)
            self._batch = []

    def _send_forever(self) -> None:
        """Writes on a thread: a pipe full while the engine steps must not block the loop.

        What queued while a write waited goes in the next write, each stream's audio joined
        (`coalesce`): the engine process reads between steps, so under load it gets one `Feed`
        per stream per step instead of one per 20 ms packet. The send buffer is kept small so
        that the waiting happens here, where audio can be joined, not in the socket."""
        self._connected.wait()
        with self._pipe_socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        ended = False
        while not ended:
            batches = [self._outgoing.get()]
            while not self._outgoing.empty():
                batches.append(self._outgoing.get_nowait())
            ended = None in batches  # stop(): what it queued before is in `batches`
            commands = coalesce([c for batch in batches if batch is not None for c in batch])
            try:
                if commands:
                    self._pipe.send(commands)
            except OSError:
                return  # the engine process is gone; the reader reports it
        # leave: the engine process reads the end (and frees our streams), then closes its side,
        # which ends the reader's recv (closing the pipe here would not wake it)
        with self._pipe_socket() as sock:
            sock.shutdown(socket.SHUT_WR)

    def _pipe_socket(self) -> socket.socket:
        """The pipe's Unix socket, for options the `Connection` does not offer (a duplicate
        descriptor: closing it leaves the pipe open)."""
        return socket.socket(fileno=os.dup(self._pipe.fileno()))

    def _read_forever(self) -> None:
        try:
            self._pipe = _connect(self._address, self._authkey, self._own)
        except OSError as exc:
            self._loop.call_soon_threadsafe(self._lost, exc)
            return
        self._connected.set()
        while True:
            try:
                kind, payload, updates = self._pipe.recv()
            except (EOFError, OSError) as exc:
                self._pipe.close()
                self._loop.call_soon_threadsafe(self._lost, exc)
                return
            self._loop.call_soon_threadsafe(self._on_message, kind, payload, updates)

    def _on_message(self, kind: str, payload: Any, updates: tuple) -> None:
        replay(self._metrics, updates)
        if kind == "events":
            self._dispatch(payload)
        elif kind == "loaded":
            _settle(self.loaded, payload, None)
        else:  # "failed": the load error, as text (exceptions of torch do not always pickle)
            _settle(self.loaded, None, RuntimeError(payload))

    def _lost(self, error: BaseException) -> None:
        if self._stopping:
            return
        if not self.loaded.done():
            _settle(self.loaded, None, RuntimeError(f"no engine process: {error}"))
            return
        log.error("lost the engine process (%s)", error)
        self._fail_all(RuntimeError("the engine process exited"))
        self._on_failure()


class EngineProcess:
    """A spawned engine process listening on a fresh Unix socket in a private directory."""

    def __init__(self, load_engine: Callable[[], Any], options: tuple, shared: bool):
        self._folder = tempfile.TemporaryDirectory(prefix="nemotron-asr-engine-")
        self.address = os.path.join(self._folder.name, "engine")
        self.authkey = os.urandom(16)
        level = logging.getLogger().level
        self.process = multiprocessing.get_context("spawn").Process(
            target=engine_main,
            args=(load_engine, self.address, self.authkey, options, level, shared),
            name="asr-engine",
            daemon=True,  # ends with the process that started it, whatever happens there
        )

    def start(self) -> None:
        self.process.start()

    def join(self, timeout: float) -> None:
        """Wait for the process to exit (terminate it after `timeout`, kill it 5 s later: once
        exiting it ignores SIGTERM), then clean up."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._folder.cleanup()


def coalesce(commands: list[Command]) -> list[Command]:
    """The same commands with each stream's consecutive audio (nothing else of that stream
    between) joined into one `Feed`: the engine buffers Feed(a), Feed(b) exactly as
    Feed(a + b), and a process receiving commands applies one per stream, not one per packet."""
    out: list[Command] = []
    audio: dict[int, list[bytes]] = {}  # index in `out` of a Feed -> its audio
    extendable: dict[int, int] = {}  # stream id -> index in `out` of its Feed nothing follows
    for command in commands:
        stream_id = getattr(command, "stream_id", None)
        if isinstance(command, Feed):
            if (index := extendable.get(stream_id)) is not None:
                audio[index].append(command.data)
                continue
            extendable[stream_id] = len(out)
            audio[len(out)] = [command.data]
        elif stream_id is not None:
            extendable.pop(stream_id, None)
        out.append(command)
    for index, parts in audio.items():
        if len(parts) > 1:
            out[index] = Feed(out[index].stream_id, b"".join(parts))
    return out


def _connect(address: str, authkey: bytes, own: EngineProcess | None) -> Connection:
    """Connect to the engine process's listener, which appears once that process has started
    (imports take seconds); give up when our own engine process has exited."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            return Client(address, authkey=authkey)
        except (FileNotFoundError, ConnectionRefusedError):
            exited = own is not None and own.process.exitcode is not None
            if exited or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
