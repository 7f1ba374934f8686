"""The scheduler: the only code that touches the `AsrEngine`, on a thread or process of its own.

The engine is synchronous and not thread-safe, and a model step takes milliseconds to tens of
milliseconds, so it never runs on the event loop (`inference.py` puts the scheduler on a thread,
or in a process of its own). Connections send it commands; it applies every queued command, then
launches ONE engine step over all streams that have a full chunk (so all connections' audio is
batched into one model call), finishes the step launched before it, hands that step's events
back in one call, and repeats. So the host applies commands and prepares a step while the GPU
computes the previous one (at 1,024 streams the two took about equal time, one after the
other); with nothing more to launch the step in flight is finished at once, so a lone stream
waits no longer. Where a launch computes the whole step (a CPU engine, `launches_ahead` False)
each step is finished as soon as it is launched: there is nothing to overlap, and waiting for
the next launch would only delay its results by a step. While the engine has no work it sleeps
until a command comes.

Scheduling, by deadline: a GPU step costs about the same for one stream as for a hundred, so
the scheduler waits for more chunks to join a step, but never longer than `batch_wait` past the
moment the oldest ready chunk became ready (a chunk that arrived during a step counts from that
step's start: it has waited through it, so under load steps run back to back). It steps at once
when waiting cannot help: every open stream has a chunk ready (so a lone stream never waits),
the ready streams fill the largest batch, or a finalize is in progress (a finalize jumps the
queue: the user is waiting for its final).

Ordering: commands of one stream are applied in the order they were sent, and results reach the
connection in the order they were produced. While a stream is finalizing, its next finalize, flush
or reset waits and is replayed when the final is out (each request gets its own final), and so
does everything sent after it; audio sent during a context-keeping finalize goes straight to the
engine, which queues it after the padding, while audio sent during a reset waits (the engine
accepts none until the stream is clean). Either way a client may stream the next utterance
without waiting for the previous final.

Backpressure: the scheduler tells each connection how much of its audio the engine has consumed
(`Consumed`, sent whenever a stream has caught up: less than one chunk of its audio left), so the
connection can stop reading a client that is at its bound and resume once this arrives. It also
says at which byte the stream's next chunk is ready, so the connection can hold audio short of
it and send about one `Feed` per chunk (`session.py`).

Commands and events (`commands.py`) are small picklable dataclasses, so the same messages cross
a thread's queue or a process's pipe.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from nemotron_speech.asr.errors import AsrError, BufferFullError
from nemotron_speech.protocol import SAMPLE_RATE, CloseCode, Error, Transcript
from nemotron_speech.server.commands import (
    ENGINE_FAILURE,
    Close,
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

log = logging.getLogger(__name__)
IDLE_SPELL_S = 1.0  # a wait for commands with no work, between two counts of idle time


Receive = Callable[[float], list]  # commands, waiting up to that many seconds
PostEvents = Callable[[list[tuple[Hashable, Event]]], None]


@dataclass
class _Stream:
    """What the scheduler keeps per stream besides the engine's own state."""

    key: Hashable
    finalize_requested_at: float | None = None  # set while a finalize is in progress
    resetting: bool = False  # ... and it is a reset: the engine takes no audio until the final
    deferred: list[Feed | Finalize | Flush] = field(default_factory=list)  # wait for the final
    deferred_bytes: int = 0  # audio among `deferred`, bounded like the engine's buffer
    failed: bool = False  # the stream was ended with StreamClosed; ignore its audio
    fed_bytes: int = 0  # audio given to the engine so far
    consumed_bytes: int = 0  # the last `Consumed` sent
    ready_at: float | None = None  # when the next chunk became ready (its audio was applied)


@dataclass(frozen=True)
class _Launched:
    """An engine step in flight, and when each of its streams' chunk became ready."""

    step: Any  # the engine's LaunchedStep
    ready_at: dict[int, float | None]


class Scheduler:
    """Runs `engine` for the connections; `post_events` gets each batch of their events."""

    def __init__(
        self,
        engine: Any,
        metrics: Any,
        post_events: PostEvents,
        batch_wait: float = 0.0,
        max_batch: int = 1024,
    ):
        self.engine = engine
        self._metrics = metrics  # ServerMetrics, or what records its updates for another process
        self._post_events = post_events
        self._batch_wait = batch_wait  # seconds a ready chunk may wait for others to join it
        self._max_batch = max_batch  # ready streams that make a step worth running at once
        self._streams: dict[int, _Stream] = {}
        # stream id -> when its chunk became ready, oldest first (dicts keep insertion order)
        self._ready: dict[int, float] = {}
        self._finalizing: set[int] = set()  # streams whose final is in progress
        self._outbox: list[tuple[Hashable, Event]] = []  # events not yet posted
        # when the commands being applied may have arrived: a step's start if they queued
        # behind it (they waited through it already), else None (they just arrived)
        self._busy_since: float | None = None
        self._step_time = 0.0  # seconds in `_step` (with its events) so far, for the accounting
        self._launched: _Launched | None = None  # the step on the device, not yet finished

    def serve(self, receive: Receive) -> None:
        """Apply commands and step until a `Stop` arrives; the step in flight is finished
        before returning, so its results are posted."""
        try:
            self._serve(receive)
        finally:
            self._finish_launched()

    def _serve(self, receive: Receive) -> None:
        while True:
            delay = self._step_delay()
            if delay == 0:
                started = time.perf_counter()
                self._step()
                # what queued meanwhile joins the next step, as ready since this one began
                self._busy_since = started
                if not self._apply_all(self._receive(receive, 0)):
                    return
                self._busy_since = None
                continue
            if self._launched is not None:  # nothing to launch: the step in flight is next
                self._finish_launched()
                continue
            # sleep until commands come or the oldest ready chunk's deadline passes (with no
            # work, in spells of IDLE_SPELL_S: idle time is counted as it passes)
            if not self._apply_all(self._receive(receive, delay or IDLE_SPELL_S)):
                return

    def _receive(self, receive: Receive, timeout: float) -> list:
        """`receive`, its time counted as reading (the drain after a step) or idle (a wait)."""
        started = time.perf_counter()
        commands = receive(timeout)
        self._account("reading" if timeout == 0 else "idle", started)
        return commands

    def _account(self, activity: str, started: float) -> None:
        """Count the time since `started` (perf_counter) as `activity` (metrics.py's list)."""
        self._metrics.scheduler_seconds.inc(time.perf_counter() - started, label=activity)

    def _step_delay(self) -> float | None:
        """Seconds to wait before the next step (see the module's scheduling); None: no work."""
        if self._finalizing:
            return 0.0
        if not self._ready:
            return None
        if len(self._ready) >= min(len(self._streams), self._max_batch):
            return 0.0
        oldest = next(iter(self._ready.values()))
        return max(0.0, oldest + self._batch_wait - time.perf_counter())

    def _apply_all(self, commands: list) -> bool:
        """Apply commands in order; False when one of them is the stop signal."""
        started, stepped = time.perf_counter(), self._step_time
        try:
            for command in commands:
                if isinstance(command, Stop):
                    return False
                try:
                    self._apply(command)
                except Exception:  # a bug must cost one stream, never the scheduler
                    log.exception("failed to apply %s", type(command).__name__)
                    self._fail(getattr(command, "stream_id", None))
            return True
        finally:  # a flush's steps inside count as steps only
            self._account("commands", started + self._step_time - stepped)
            self._post()

    def _apply(self, command) -> None:
        if isinstance(command, Open):
            stream_id = self.engine.open_stream()
            self._streams[stream_id] = _Stream(command.key)
            self._metrics.streams_open.set(self.engine.open_streams)
            self._outbox.append((command.key, Opened(stream_id)))
            return
        if isinstance(command, Close):
            if self._streams.pop(command.stream_id, None) is not None:
                self._forget(command.stream_id)
                self.engine.close(command.stream_id)
            self._metrics.streams_open.set(self.engine.open_streams)
            return
        stream = self._streams.get(command.stream_id)
        if stream is None or stream.failed:
            return
        if self._must_wait(stream, command):
            if isinstance(command, Feed):
                stream.deferred_bytes += len(command.data)
                if stream.deferred_bytes > 2 * self.engine.max_buffered_samples:
                    self._buffer_full(
                        command.stream_id, stream, "too much audio arrived while finalizing"
                    )
                    return
            stream.deferred.append(command)
        elif isinstance(command, Feed):
            self._feed(command.stream_id, stream, command.data)
        elif isinstance(command, Finalize):
            self.engine.request_finalize(command.stream_id, reset=command.reset)
            stream.finalize_requested_at = command.received_at
            stream.resetting = command.reset
            self._finalizing.add(command.stream_id)
        else:
            self._flush(command.stream_id, stream)

    @staticmethod
    def _must_wait(stream: _Stream, command) -> bool:
        """Whether `command` waits for the final in progress (see the module's ordering)."""
        if stream.deferred:
            return True
        if stream.finalize_requested_at is None:
            return False
        return stream.resetting or not isinstance(command, Feed)

    def _feed(self, stream_id: int, stream: _Stream, data: bytes) -> None:
        try:
            self.engine.feed(stream_id, data)
        except BufferFullError as exc:
            self._buffer_full(stream_id, stream, str(exc))
            return
        stream.fed_bytes += len(data)
        self._metrics.audio_seconds.inc(len(data) / (2 * SAMPLE_RATE))
        if stream_id not in self._ready and self.engine.has_chunk(stream_id):
            stream.ready_at = time.perf_counter()
            self._ready[stream_id] = self._busy_since or stream.ready_at

    def _forget(self, stream_id: int) -> None:
        """Drop a stream that is closed or failed from the scheduler's books."""
        self._ready.pop(stream_id, None)
        self._finalizing.discard(stream_id)

    def _buffer_full(self, stream_id: int, stream: _Stream, detail: str) -> None:
        """End a stream whose audio passed the engine's bound (the last line of defence: the
        connection stops reading before that): dropping audio would silently corrupt its
        transcript, and an unbounded buffer would let it exhaust memory."""
        stream.failed = True
        self._forget(stream_id)
        self._send(stream, Error(f"audio buffer full: {detail}"))
        self._send(stream, StreamClosed(CloseCode.POLICY_VIOLATION, "audio buffer full"))
        self._metrics.client_errors.inc(label="buffer_full")

    def _step(self) -> None:
        """Launch an engine step over every ready stream, then finish the step launched before
        it: the device computed that one while the host applied commands and prepared this.
        An engine whose launch runs the whole step (on a CPU) has its step finished at once."""
        with self._stepping() as started:
            launched = self._launch(None, started)
            previous, self._launched = self._launched, launched
            if previous is not None:
                self._finish(previous)
            if not self.engine.launches_ahead:  # the launch ran the whole step: report it now
                self._finish_launched()

    def _step_alone(self, stream_id: int) -> bool:
        """Run one step of `stream_id` only, start to end; False if it ran none."""
        with self._stepping() as started:
            launched = self._launch((stream_id,), started)
            return launched is not None and self._finish(launched) > 0

    def _finish_launched(self) -> None:
        """Finish the step in flight, if any."""
        launched, self._launched = self._launched, None
        if launched is not None:
            with self._stepping():
                self._finish(launched)

    @contextlib.contextmanager
    def _stepping(self):
        """Count the time inside as step time, less that of the steps run inside it (a flush's,
        counted already), and post the step's events; yields when it began."""
        started, stepped = time.perf_counter(), self._step_time
        try:
            yield started
        finally:
            self._account("step", started + self._step_time - stepped)
            self._post()
            self._step_time = stepped + time.perf_counter() - started

    def _launch(self, only: tuple[int, ...] | None, started: float) -> _Launched | None:
        """Launch an engine step; None (every stream failed) if the engine failed."""
        try:
            launched = self.engine.launch(only=only)
        except Exception:
            self._engine_failed()
            return None
        stream_ids = [stream.stream_id for stream in launched.streams]
        ready_at = {i: getattr(self._streams.get(i), "ready_at", None) for i in stream_ids}
        for stream_id in stream_ids:  # behind: what is left was ready before this step
            if self._ready.pop(stream_id, None) is not None and self.engine.has_chunk(stream_id):
                self._ready[stream_id] = self._streams[stream_id].ready_at = started
        return _Launched(launched, ready_at)

    def _finish(self, launched: _Launched) -> int:
        """Deliver a launched step's results; the number of streams it ran."""
        try:
            results = self.engine.finish(launched.step)
        except Exception:
            self._engine_failed()
            return 0
        info, done = self.engine.last_step, time.perf_counter()
        if info.batch_size:
            self._metrics.steps.inc()
            self._metrics.batch_size.observe(info.batch_size)
            self._metrics.step_seconds.observe(info.seconds)
        finalized = []
        for result in results:
            stream = self._streams.get(result.stream_id)
            if stream is not None:
                ready_at = launched.ready_at.get(result.stream_id)
                self._deliver(stream, result, ready_at, done)
                if result.is_final:
                    finalized.append(stream)
        for stream_id in info.stream_ids:
            self._report_consumed(stream_id)
        # what waited for a final runs once the whole step is out: a flush among it finishes
        # the step in flight, whose results must not come between this step's
        for stream in finalized:
            self._replay_deferred(stream)
        return info.batch_size

    def _engine_failed(self) -> None:
        log.exception("engine step failed; closing every stream")
        for stream_id in list(self._streams):
            self._fail(stream_id)

    def _report_consumed(self, stream_id: int) -> None:
        """Tell the connection how far the engine got, once the stream has caught up (less than
        a chunk left): exact, and at most once per step even for a stream fed in tiny frames."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.failed or stream.fed_bytes == stream.consumed_bytes:
            return
        if not self.engine.has_chunk(stream_id):
            stream.consumed_bytes = stream.fed_bytes
            next_chunk_at = self.engine.next_chunk_bytes(stream_id)
            self._send(stream, Consumed(stream.fed_bytes, next_chunk_at))

    def _fail(self, stream_id: int | None) -> None:
        """End a stream after an internal error: tell the client, close with 1011, free it."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        stream.failed = True
        self._forget(stream_id)
        for event in ENGINE_FAILURE:
            self._send(stream, event)
        with contextlib.suppress(AsrError):
            self.engine.close(stream_id)
        self._metrics.streams_open.set(self.engine.open_streams)

    def _deliver(
        self, stream: _Stream, result, ready_at: float | None = None, done_at: float | None = None
    ) -> None:
        if not result.is_final:
            interim = Interim(Transcript(result.text), result.audio_bytes, ready_at, done_at)
            self._send(stream, interim)
            self._metrics.transcripts.inc(label="interim")
            return
        self._send(stream, Transcript(result.text, is_final=True, finalize=True))
        self._metrics.transcripts.inc(label="final")
        if stream.finalize_requested_at is not None:
            self._metrics.finalize_seconds.observe(
                time.perf_counter() - stream.finalize_requested_at
            )
        stream.finalize_requested_at, stream.resetting = None, False
        self._finalizing.discard(result.stream_id)

    def _replay_deferred(self, stream: _Stream) -> None:
        """Apply the commands that waited for the stream's final (see the module's ordering)."""
        deferred, stream.deferred, stream.deferred_bytes = stream.deferred, [], 0
        for command in deferred:
            self._apply(command)

    def _flush(self, stream_id: int, stream: _Stream) -> None:
        """Answer a flush with the text of all audio received before it (up to the last full
        chunk): first step this stream alone through its backlog, usually nothing or one chunk,
        then report its text and leave its state as it is."""
        self._finish_launched()  # its chunk in flight comes first
        while self._step_alone(stream_id):
            pass
        if stream.failed:
            return
        self._send(stream, Transcript(self.engine.flush(stream_id), is_final=True))
        self._metrics.transcripts.inc(label="flush")

    def _send(self, stream: _Stream, event: Event) -> None:
        self._outbox.append((stream.key, event))

    def _post(self) -> None:
        """Hand every event queued since the last post to the connections in one call: one
        wake-up of the event loop per step, not one per stream."""
        started = time.perf_counter()
        events, self._outbox = self._outbox, []
        self._post_events(events)
        self._account("events", started)
