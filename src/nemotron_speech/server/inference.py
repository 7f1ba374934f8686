"""Where the scheduler (`scheduler.py`) runs: on a thread of the server's process, or in a
process of its own (`--engine-process`); the connections talk to either through one interface.

On a thread, the engine's step shares the interpreter's lock with the event loop: each time the
step releases it (every torch call does), it must win it back from a loop busy with hundreds of
connections, so steps stretch at scale (docs/server.md has the measurement). In a process of its
own the scheduler has an interpreter to itself; commands cross a pipe in one batch per loop
iteration, and events come back in one batch per step, with the metric updates the scheduler
made (replayed into the server's registry, so `/metrics` is unchanged).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nemotron_speech.protocol import CloseCode, Error
from nemotron_speech.server.metrics import ServerMetrics
from nemotron_speech.server.scheduler import (
    Close,
    Command,
    Consumed,
    Event,
    Feed,
    Finalize,
    Flush,
    Open,
    Opened,
    Scheduler,
    Stop,
    StreamClosed,
)

__all__ = ["Consumed", "EngineInfo", "Event", "InferenceProcess", "InferenceThread", "StreamClosed"]

log = logging.getLogger(__name__)

Sink = Callable[[Event], None]  # called on the event loop


@dataclass(frozen=True)
class EngineInfo:
    """What the server says about its engine (Ready message, start-up log)."""

    chunk_ms: float
    right_context: int
    device: str
    supported_right_contexts: tuple[int, ...]
    memory: str

    @classmethod
    def of(cls, engine: Any) -> EngineInfo:
        return cls(
            engine.chunk_ms,
            engine.right_context,
            str(engine.device),
            tuple(engine.supported_right_contexts),
            engine.memory_report(),
        )


class _Inference:
    """The connections' side: opens streams, sends commands, routes events to their sinks."""

    def __init__(self, metrics: ServerMetrics, loop: asyncio.AbstractEventLoop):
        self._metrics = metrics
        self._loop = loop
        self._sinks: dict[int, Sink] = {}
        self._opening: dict[int, asyncio.Future] = {}
        self._next_key = 0
        self.loaded: asyncio.Future = loop.create_future()  # EngineInfo, or the load error

    async def open(self, sink: Sink) -> int:
        """Open an engine stream whose events go to `sink`; returns its id."""
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
        self._submit(Close(stream_id))

    def _submit(self, command: Command) -> None:
        raise NotImplementedError

    def _dispatch(self, events: list[tuple[int, Event]]) -> None:
        """On the loop: each event to its connection (a closed one's are dropped)."""
        for key, event in events:
            if isinstance(event, Opened):
                _settle(self._opening.pop(key), event.stream_id, None)
            elif (sink := self._sinks.get(key)) is not None:
                sink(event)
                if isinstance(event, StreamClosed):
                    del self._sinks[key]

    def _fail_all(self, error: BaseException) -> None:
        """On the loop, when the engine is gone: end every stream with 1011, fail what waits."""
        _settle(self.loaded, None, error)
        for future in self._opening.values():
            _settle(future, None, error)
        for sink in self._sinks.values():
            sink(Error("internal error in the ASR engine; reconnect"))
            sink(StreamClosed(CloseCode.INTERNAL_ERROR, "engine failure"))
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

    def _receive(self, timeout: float | None) -> list:
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
    """The scheduler in a spawned process of its own, fed through a pipe."""

    def __init__(
        self,
        load_engine: Callable[[], Any],
        metrics: ServerMetrics,
        loop: asyncio.AbstractEventLoop,
        batch_wait: float = 0.0,
        max_batch: int = 1024,
        on_failure: Callable[[], None] = lambda: None,
    ):
        super().__init__(metrics, loop)
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_engine_main,
            args=(load_engine, child, batch_wait, max_batch, logging.getLogger().level),
            name="asr-engine",
            daemon=True,
        )
        self._on_failure = on_failure
        self._batch: list[Command] = []  # commands of this loop iteration
        self._outgoing: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False

    def start(self) -> None:
        self._process.start()
        threading.Thread(target=self._send_forever, name="asr-engine-send", daemon=True).start()
        threading.Thread(target=self._read_forever, name="asr-engine-read", daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the engine process finish its queued commands and exit."""
        self._stopping = True
        self._submit(Stop())
        self._send_batch()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()

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
        """Writes on a thread: a pipe full while the engine steps must not block the loop."""
        while True:
            batch = self._outgoing.get()
            try:
                self._pipe.send(batch)
            except OSError:
                return  # the process is gone; the reader reports it
            if isinstance(batch[-1], Stop):
                return

    def _read_forever(self) -> None:
        while True:
            try:
                kind, payload, updates = self._pipe.recv()
            except (EOFError, OSError):
                self._loop.call_soon_threadsafe(self._lost)
                return
            self._loop.call_soon_threadsafe(self._receive, kind, payload, updates)

    def _receive(self, kind: str, payload: Any, updates: tuple) -> None:
        _replay(self._metrics, updates)
        if kind == "events":
            self._dispatch(payload)
        elif kind == "loaded":
            _settle(self.loaded, payload, None)
        else:  # "failed": the load error, as text (exceptions of torch do not always pickle)
            _settle(self.loaded, None, RuntimeError(payload))

    def _lost(self) -> None:
        if self._stopping:
            return
        log.error("the engine process exited (code %s)", self._process.exitcode)
        self._fail_all(RuntimeError("the engine process exited"))
        self._on_failure()


class _MetricUpdates:
    """Stands in for `ServerMetrics` in the engine process: records its updates, summed where
    they add up (one `audio_seconds.inc` per step, not per packet), for the server to replay."""

    def __init__(self) -> None:
        self._metrics: dict[str, _MetricUpdate] = {}
        self.increments: dict[tuple[str, str | None], float] = {}
        self.values: dict[str, float] = {}
        self.observations: list[tuple[str, float]] = []

    def __getattr__(self, name: str) -> _MetricUpdate:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._metrics.setdefault(name, _MetricUpdate(self, name))

    def take(self) -> tuple:
        """The updates since the last call, as (increments, values, observations)."""
        taken = (self.increments, self.values, self.observations)
        self.increments, self.values, self.observations = {}, {}, []
        return taken


class _MetricUpdate:
    def __init__(self, updates: _MetricUpdates, name: str):
        self._updates = updates
        self._name = name

    def inc(self, amount: float = 1.0, label: str | None = None) -> None:
        key = (self._name, label)
        increments = self._updates.increments
        increments[key] = increments.get(key, 0.0) + amount

    def set(self, value: float) -> None:
        self._updates.values[self._name] = value

    def observe(self, value: float) -> None:
        self._updates.observations.append((self._name, value))


def _replay(metrics: ServerMetrics, updates: tuple) -> None:
    """Apply `_MetricUpdates.take()` to the server's metrics."""
    increments, values, observations = updates
    for (name, label), amount in increments.items():
        metric = getattr(metrics, name)
        metric.inc(amount) if label is None else metric.inc(amount, label=label)
    for name, value in values.items():
        getattr(metrics, name).set(value)
    for name, value in observations:
        getattr(metrics, name).observe(value)


def _engine_main(load_engine, pipe, batch_wait: float, max_batch: int, log_level: int) -> None:
    """The engine process: load, report, then schedule until told to stop or orphaned."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = _MetricUpdates()
    try:
        engine = load_engine()
        pipe.send(("loaded", EngineInfo.of(engine), metrics.take()))
    except BaseException as exc:
        pipe.send(("failed", f"{type(exc).__name__}: {exc}", metrics.take()))
        return

    def post(events: list) -> None:
        updates = metrics.take()
        if events or updates:
            pipe.send(("events", events, updates))

    def receive(timeout: float | None) -> list:
        commands: list = []
        try:
            while pipe.poll(timeout if not commands else 0):
                commands += pipe.recv()
        except (EOFError, OSError):  # the server process is gone
            return [Stop()]
        return commands

    Scheduler(engine, metrics, post, batch_wait, max_batch).serve(receive)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
