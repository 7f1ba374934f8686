"""The engine process (`--engine-process`): one scheduler, one engine, for one or more fronts.

A front is a server process's event loop (`InferenceProcess` in `inference.py`). Fronts connect
to the engine process's listener (a Unix socket with an auth key), so one engine process per GPU
can serve every `--workers` front: a GPU time-slices the CUDA contexts of several processes, so
one context with large batches beats several with small ones (docs/server.md), while the fronts'
WebSocket work spreads over cores.

The hub here owns the connections: it tags each front's `Open` with the front's number (the
scheduler's keys are opaque), routes each step's events back to the front that opened the
stream, and closes the streams of a front whose connection ends (a front that died or stopped).
Metric updates travel with the events, summed, to one front, which replays them into the server's
registry. The engine process stops once its last front has left: at once for a front's own, after
SIGTERM for a shared one (systemd and Docker signal every process; the fronts still need it for
their streams' finals). SIGINT (Ctrl-C reaches the whole process group) is the fronts' to handle.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener, wait
from typing import Any

from nemotron_speech.server.commands import Close, Open, Opened, Stop
from nemotron_speech.server.scheduler import Scheduler

log = logging.getLogger("nemotron_speech.server.engine")
TERM_GRACE_S = 30.0  # after SIGTERM, the longest wait for the fronts' streams' finals
FOLLOW_UP_S = 0.002  # after a step, the longest wait for the fronts' follow-up writes
# a front's socket send buffer (the kernel doubles it): small, so that a front waits for the
# engine process in its sender thread, where audio can be joined (`inference.coalesce`)
SEND_BUFFER_BYTES = 16 * 1024


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


def skip_exit_collection() -> None:
    """Let this server process end without the interpreter's last garbage collection, which
    walks every torch and NeMo object for ~2 s (measured: SIGTERM to exit 2.1 s -> 0.3 s): a
    restart, and every test that stops a server, waits for it. Call once when it starts."""
    atexit.register(gc.freeze)


def engine_main(
    load_engine, address: str, authkey: bytes, options: tuple, log_level: int, shared: bool
) -> None:
    """The process: listen, load, then schedule for the fronts (`options`: batch wait, max
    batch). Exits 1 if the engine cannot load, after telling the fronts why."""
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s[engine]: %(message)s"
    )
    skip_exit_collection()
    hub = _Hub(Listener(address, authkey=authkey), shared)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: hub.stop_when_alone())
    try:
        engine = load_engine()
        hub.loaded(EngineInfo.of(engine))
    except Exception as exc:  # not SystemExit: SIGTERM while loading is a stop, not a failure
        log.error("the engine failed to load: %s", exc)
        hub.failed(f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    try:
        Scheduler(engine, hub.metrics, hub.post, *options).serve(hub.receive)
    finally:  # exiting already: a late SIGTERM must not raise inside the exit's cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Hub:
    """The fronts' connections, seen by the scheduler as one command source and event sink."""

    def __init__(self, listener: Listener, shared: bool):
        self.metrics = MetricUpdates()
        self._shared = shared  # serve until terminated; else until the only front leaves
        self._fronts: dict[int, Connection] = {}
        self._owner: dict[int, int] = {}  # stream id -> its front
        self._orphans: list[Close] = []  # streams opened for a front that has left meanwhile
        self._metrics_front: int | None = None  # the front that replays the metric updates
        self._hello: tuple | None = None  # ("loaded", info) or ("failed", why), for new fronts
        self._joined = 0
        self._new: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: Listener) -> None:
        """On a thread: accept fronts and wake the scheduler for each."""
        while True:
            try:
                connection = listener.accept()
            except (OSError, EOFError, AuthenticationError):  # costs that attempt only
                continue
            self._new.put(connection)
            os.write(self._wake_write, b"+")

    def stop_when_alone(self) -> None:
        """SIGTERM: end once no front is left (now, if none is), and in any case after
        `TERM_GRACE_S`: a front that never leaves (its process stuck, or exiting while it waits
        for this one, as multiprocessing's exit does for its daemonic children) cannot keep it."""
        if not self._fronts:
            sys.exit(0)
        self._shared = False
        deadline = threading.Timer(TERM_GRACE_S, os._exit, args=(0,))
        deadline.daemon = True  # a process that ends sooner does not wait for it
        deadline.start()

    def loaded(self, info: EngineInfo) -> None:
        self._hello = ("loaded", info)
        self._admit()

    def failed(self, why: str) -> None:
        self._hello = ("failed", why)
        self._admit()

    def _admit(self) -> None:
        """Greet fronts that connected since the last call (once the load is settled)."""
        while self._hello is not None:
            try:
                connection = self._new.get_nowait()
            except queue.Empty:
                return
            self._joined += 1
            self._fronts[self._joined] = connection
            self._send(self._joined, (*self._hello, ({}, {}, [])))

    def receive(self, timeout: float) -> list:
        """Commands of every front that has some, waiting up to `timeout`.

        After a step (`timeout` 0), a front that had more waiting than its send buffer holds was
        blocked writing it while the step ran, and writes what queued meanwhile (its audio
        joined) as soon as this is read: that follow-up is waited for, briefly, so that audio
        joins the next step instead of the one after it. A front that was not blocked has no
        follow-up coming, so a lightly loaded server never waits."""
        ready = wait([self._wake_read, *self._fronts.values()], timeout)
        if self._wake_read in ready:
            os.read(self._wake_read, 4096)
            self._admit()
        commands: list = self._orphans
        self._orphans = []
        pending = self._read(ready, commands)
        deadline = time.perf_counter() + FOLLOW_UP_S
        while timeout == 0 and pending and (left := deadline - time.perf_counter()) > 0:
            answered = wait(pending, left)
            self._read(answered, commands)
            pending = [c for c in pending if c not in answered and c in self._fronts.values()]
        if not self._fronts and not self._shared and self._joined:
            commands.append(Stop())  # a front's own engine process ends with its front
        return commands

    def _read(self, ready: list, commands: list) -> list[Connection]:
        """Append the commands waiting on the `ready` connections; the connections that had
        more than their send buffer holds (their writers were blocked on this process)."""
        blocked = []
        for front, connection in list(self._fronts.items()):
            size = 0
            try:
                while connection in ready and connection.poll():
                    message = connection.recv_bytes()
                    size += len(message)
                    commands += self._from(front, pickle.loads(message))
                if size >= SEND_BUFFER_BYTES:  # half the doubled buffer: skbs have overhead
                    blocked.append(connection)
            except (EOFError, OSError):  # the front left: free its streams
                del self._fronts[front]
                left = [i for i, owner in self._owner.items() if owner == front]
                for stream_id in left:
                    del self._owner[stream_id]
                commands += [Close(stream_id) for stream_id in left]
        return blocked

    def _from(self, front: int, batch: list) -> list:
        for index, command in enumerate(batch):
            if isinstance(command, Open):
                batch[index] = Open((front, command.key))
            elif isinstance(command, Close):
                self._owner.pop(command.stream_id, None)
        return batch

    def post(self, events: list) -> None:
        """One message per front with its events; the metric updates go to the longest-joined
        front, always the same one while it lives (a gauge's value is the last one set)."""
        by_front: dict[int, list] = {}
        for (front, key), event in events:
            if isinstance(event, Opened):
                if front not in self._fronts:  # it left before its stream was open
                    self._orphans.append(Close(event.stream_id))
                    continue
                self._owner[event.stream_id] = front
            by_front.setdefault(front, []).append((key, event))
        updates = self.metrics.take()
        metrics_front = next(iter(self._fronts), None)
        if metrics_front != self._metrics_front:  # a new replayer: it needs every gauge's value
            self._metrics_front = metrics_front
            updates = (updates[0], {**self.metrics.gauges, **updates[1]}, updates[2])
        if metrics_front is not None and updates != ({}, {}, []):
            by_front.setdefault(metrics_front, [])
        for front, front_events in by_front.items():
            mine = front == metrics_front
            self._send(front, ("events", front_events, updates if mine else ({}, {}, [])))

    def _send(self, front: int, message: tuple) -> None:
        connection = self._fronts.get(front)
        if connection is None:
            return
        with contextlib.suppress(OSError):  # gone: `receive` sees its end and frees its streams
            connection.send(message)


class MetricUpdates:
    """Stands in for `ServerMetrics` in the engine process: records its updates, summed where
    they add up (one `audio_seconds.inc` per step, not per packet), for a front to replay."""

    def __init__(self) -> None:
        self._metrics: dict[str, _MetricUpdate] = {}
        self.increments: dict[tuple[str, str | None], float] = {}
        self.values: dict[str, float] = {}
        self.observations: list[tuple[str, float]] = []
        self.gauges: dict[str, float] = {}  # every gauge's last value, for a new replayer

    def __getattr__(self, name: str) -> _MetricUpdate:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._metrics.setdefault(name, _MetricUpdate(self, name))

    def take(self) -> tuple:
        """The updates since the last call, as (increments, values, observations)."""
        self.gauges.update(self.values)
        taken = (self.increments, self.values, self.observations)
        self.increments, self.values, self.observations = {}, {}, []
        return taken


class _MetricUpdate:
    def __init__(self, updates: MetricUpdates, name: str):
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


def replay(metrics: Any, updates: tuple) -> None:
    """Apply `MetricUpdates.take()` to the server's `ServerMetrics`."""
    increments, values, observations = updates
    for (name, label), amount in increments.items():
        metric = getattr(metrics, name)
        metric.inc(amount) if label is None else metric.inc(amount, label=label)
    for name, value in values.items():
        getattr(metrics, name).set(value)
    for name, value in observations:
        getattr(metrics, name).observe(value)
