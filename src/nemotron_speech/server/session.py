"""One WebSocket connection: its engine stream, its reader and its writer.

States: OPENING (stream being opened) -> STREAMING (audio and control messages flow) ->
CLOSING (the client left, the server ended the stream, or shutdown) -> CLOSED (stream freed).
Whatever way a connection ends, `run()` frees its engine stream in `finally`, so no exit path
leaks a stream.

All messages to the client go through one queue and one writer task, so transcripts from the
scheduler and error replies from the reader keep their order.

Backpressure: the reader counts the audio it passes to the engine, the scheduler reports
what the engine has consumed, and while the difference would pass `max_buffered_bytes` the reader
reads nothing more. The client's frames then wait in the kernel buffers, its TCP window closes and
its sends block, so an unpaced client is slowed to the engine's speed instead of being cut off;
nothing is dropped. A stream held at its bound for `backpressure_timeout` (the server cannot keep
up with it) is closed with 1008, so a stalled stream cannot keep its place forever.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass, replace

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from nemotron_speech.protocol import (
    BYTES_PER_MS,
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    CloseCode,
    Error,
    Finalize,
    ProtocolError,
    Ready,
    Reset,
    Transcript,
    encode,
    parse_client_message,
)
from nemotron_speech.server.inference import (
    Consumed,
    Event,
    InferenceProcess,
    InferenceThread,
    Interim,
    StreamClosed,
)
from nemotron_speech.server.metrics import LAG_PARTS, ServerMetrics

log = logging.getLogger(__name__)


class State(enum.Enum):
    OPENING = "opening"
    STREAMING = "streaming"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True)
class Limits:
    """What one connection may do (the server's options of the same names)."""

    idle_timeout: float  # seconds without a message before the connection is closed
    max_buffered_seconds: float  # unprocessed audio at which the reader stops reading
    backpressure_timeout: float  # seconds a stream may stay at that bound

    @property
    def max_buffered_bytes(self) -> int:
        return int(self.max_buffered_seconds * SAMPLE_RATE) * SAMPLE_WIDTH


class _Arrivals:
    """When each audio frame arrived, by where it ends in the stream's bytes: an interim's lag
    is its send time minus the arrival of the frame that made its chunk ready."""

    def __init__(self) -> None:
        self._frames: deque[tuple[int, float]] = deque()  # (end byte, loop time), in order

    def add(self, end: int, at: float) -> None:
        self._frames.append((end, at))

    def of(self, position: int) -> float | None:
        """When the frame holding byte `position - 1` arrived; earlier frames are forgotten."""
        self.forget(position)
        return self._frames[0][1] if self._frames else None

    def forget(self, position: int) -> None:
        """Drop the frames that end before `position`: no later chunk ends there."""
        while self._frames and self._frames[0][0] < position:
            self._frames.popleft()


@dataclass(frozen=True)
class _TimedInterim:
    """An interim on its way out, with the loop time its audio arrived (None: a finalize made
    it): its lag is observed once it is written, in all and in parts (`Interim`)."""

    transcript: Transcript
    arrived: float | None
    ready_at: float | None = None
    done_at: float | None = None

    def observe(self, metrics, sent: float) -> None:
        """The lag, and its parts: to the scheduler, in it (waiting for and running a step),
        back (events to this connection, and its send)."""
        if self.arrived is None:
            return
        metrics.interim_lag_seconds.observe(sent - self.arrived)
        if self.ready_at is None or self.done_at is None:
            return
        parts = (self.arrived, self.ready_at, self.done_at, sent)
        for name, start, end in zip(LAG_PARTS, parts[:-1], parts[1:], strict=True):
            metrics.interim_lag_parts.observe(end - start, label=name)


class Session:
    """Serves one connection until it closes; `shutdown()` finalizes it for a server stop."""

    def __init__(
        self,
        websocket: ServerConnection,
        inference: InferenceThread | InferenceProcess,
        ready: Ready,
        metrics: ServerMetrics,
        limits: Limits,
    ):
        self.websocket = websocket
        self.state = State.OPENING
        self._inference = inference
        self._ready = ready
        self._metrics = metrics
        self._limits = limits
        self._outbox: asyncio.Queue[Event | Ready | _TimedInterim] = asyncio.Queue()
        self._stream_id: int | None = None
        self._final_sent = asyncio.Event()  # set after each final is written
        self._last_message = 0.0  # loop time of the last message received
        self._sent_bytes = 0  # audio read for the engine (passed on, or in `_held`)
        self._arrivals = _Arrivals()
        self._consumed_bytes = 0  # ... of which the engine has consumed this much
        self._held: list[bytes] = []  # audio short of the engine's next chunk (`_pass_audio`)
        self._next_chunk_at: int | None = None  # audio that makes it ready; None: unknown
        self._finals_due = 0  # finalizes asked for, not yet answered: `_next_chunk_at` is stale
        self._backpressured = False  # the reader is holding a frame until there is room
        self._wake_reader = asyncio.Event()  # audio consumed, or the stream is ending

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        watchdog = None
        try:
            self._stream_id = await self._inference.open(self._on_event)
            self.state = State.STREAMING
            self._outbox.put_nowait(self._ready)
            watchdog = asyncio.create_task(self._watch_idle())
            await self._read()
        finally:
            self.state = State.CLOSED
            if self._stream_id is not None:
                self._inference.close(self._stream_id)
            writer.cancel()
            if watchdog is not None:
                watchdog.cancel()

    async def shutdown(self, timeout: float) -> None:
        """Reset the stream, send its final text, then close with 1001."""
        if self.state is State.STREAMING and self._stream_id is not None:
            self.state = State.CLOSING
            self._wake_reader.set()  # a frame held back by backpressure is dropped
            self._final_sent.clear()
            self._release_audio()
            self._finalize(reset=True)
            try:
                await asyncio.wait_for(self._final_sent.wait(), timeout)
            except TimeoutError:
                log.warning("no final for stream %s within %.1f s", self._stream_id, timeout)
        await self.websocket.close(CloseCode.GOING_AWAY, "server shutting down")

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self.websocket:
                self._last_message = loop.time()
                if self.state is not State.STREAMING:
                    continue  # closing: the final is on its way; later input has nowhere to go
                if isinstance(message, bytes):
                    if await self._room_for(len(message)):
                        self._sent_bytes += len(message)
                        self._arrivals.add(self._sent_bytes, loop.time())
                        self._pass_audio(message)
                    continue
                try:
                    command = parse_client_message(message)
                except ProtocolError as exc:
                    self._metrics.client_errors.inc(label="bad_message")
                    self._outbox.put_nowait(Error(str(exc)))
                    continue
                self._release_audio()  # what was held comes first
                if isinstance(command, Finalize):
                    self._finalize(reset=False)
                elif isinstance(command, Reset) and not command.finalize:
                    self._inference.flush(self._stream_id)
                else:  # a reset, or the end of the audio
                    self._finalize(reset=True)
        except ConnectionClosed as closed:
            if closed.sent is not None and closed.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self._metrics.client_errors.inc(label="too_big")

    def _pass_audio(self, data: bytes) -> None:
        """Give audio to the engine once its next chunk can use it. Audio short of that chunk
        waits here and goes with the frame that completes it, at once: no chunk waits, and the
        scheduler applies about one command per chunk instead of one per frame (8 for 20 ms
        frames), whose cost bounded a server near 1,000 streams (docs/server.md)."""
        self._held.append(data)
        if self._next_chunk_at is None or self._sent_bytes >= self._next_chunk_at:
            self._release_audio()

    def _release_audio(self) -> None:
        if self._held:
            self._inference.feed(self._stream_id, b"".join(self._held))
            self._held.clear()

    def _finalize(self, reset: bool) -> None:
        """Ask for a final; until it comes, the engine's next chunk is not where it said."""
        self._next_chunk_at = None
        self._finals_due += 1
        self._inference.finalize(self._stream_id, reset=reset)

    async def _room_for(self, size: int) -> bool:
        """Wait, reading nothing, until `size` more bytes of audio fit under the bound (or
        nothing is waiting: one frame is always accepted); False when the stream ends first:
        it was held at the bound for the backpressure timeout, or closed by the server."""
        limits = self._limits
        if self._over_bound(size):
            self._backpressured = True
            try:
                async with asyncio.timeout(limits.backpressure_timeout):
                    while self.state is State.STREAMING and self._over_bound(size):
                        self._wake_reader.clear()
                        await self._wake_reader.wait()
            except TimeoutError:
                self._close_stalled()
            finally:
                self._backpressured = False
                self._last_message = asyncio.get_running_loop().time()  # not the client's idling
        return self.state is State.STREAMING

    def _over_bound(self, size: int) -> bool:
        waiting = self._sent_bytes - self._consumed_bytes
        return waiting > 0 and waiting + size > self._limits.max_buffered_bytes

    def _close_stalled(self) -> None:
        self.state = State.CLOSING
        self._metrics.client_errors.inc(label="buffer_full")
        limits = self._limits
        self._outbox.put_nowait(Error(
            f"audio buffer full: the stream's audio stayed at its {limits.max_buffered_seconds:g} "
            f"s bound for {limits.backpressure_timeout:g} s (the server cannot keep up with it); "
            "send at real time or retry later"
        ))  # fmt: skip
        self._outbox.put_nowait(StreamClosed(CloseCode.POLICY_VIOLATION, "audio buffer full"))

    def _on_event(self, event: Event) -> None:
        """The scheduler's events for this stream, on the event loop."""
        if isinstance(event, Consumed):
            self._consumed_bytes = event.total_bytes
            if not self._finals_due:  # else it was measured before the finalize took effect
                self._next_chunk_at = event.next_chunk_at
            self._arrivals.forget(event.total_bytes)  # the next chunk ends after it
            self._wake_reader.set()
            return
        if isinstance(event, Interim):  # when its audio came, looked up before it is forgotten
            transcript, at = event.transcript, None
            if event.audio_bytes is not None:
                transcript = replace(transcript, audio_ms=event.audio_bytes / BYTES_PER_MS)
                at = self._arrivals.of(event.audio_bytes)
            self._outbox.put_nowait(_TimedInterim(transcript, at, event.ready_at, event.done_at))
            return
        if isinstance(event, Transcript) and event.finalize:
            self._finals_due -= 1
        if isinstance(event, StreamClosed):  # the engine ended the stream: read nothing more
            self.state = State.CLOSING
            self._wake_reader.set()
        self._outbox.put_nowait(event)

    async def _watch_idle(self) -> None:
        """Close the connection once no message came for the idle timeout. One timer per idle
        period, not one per message: the read loop only notes the time of each message. Time
        held by backpressure does not count: then the server is the one not reading."""
        loop = asyncio.get_running_loop()
        timeout = self._limits.idle_timeout
        self._last_message = loop.time()
        while (left := self._last_message + timeout - loop.time()) > 0 or self._backpressured:
            await asyncio.sleep(left if left > 0 else timeout)
        if self.state is State.STREAMING:
            self._metrics.client_errors.inc(label="idle_timeout")
            self._outbox.put_nowait(Error(f"no message for {timeout:g} s"))
            self._outbox.put_nowait(StreamClosed(CloseCode.IDLE_TIMEOUT, "idle timeout"))

    async def _write(self) -> None:
        """Send queued events in order; a `StreamClosed` ends the connection."""
        try:
            while True:
                event = await self._outbox.get()
                if isinstance(event, StreamClosed):
                    self.state = State.CLOSING
                    await self.websocket.close(event.code, event.reason)
                    return
                if isinstance(event, _TimedInterim):
                    await self.websocket.send(encode(event.transcript))
                    event.observe(self._metrics, asyncio.get_running_loop().time())
                    continue
                await self.websocket.send(encode(event))
                if isinstance(event, Transcript) and event.finalize:
                    self._final_sent.set()
        except ConnectionClosed:
            return
        except Exception:  # a bug here must end the connection, not leave it silent
            log.exception("stream %s: sending failed; closing with 1011", self._stream_id)
            self.state = State.CLOSING
            self._wake_reader.set()
            await self.websocket.close(CloseCode.INTERNAL_ERROR, "internal error")
