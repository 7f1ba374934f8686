"""One WebSocket connection: its engine stream, its reader and its writer.

States: OPENING (stream being opened) -> STREAMING (audio and control messages flow) ->
CLOSING (the client left, the server ended the stream, or shutdown) -> CLOSED (stream freed).
Whatever way a connection ends, `run()` frees its engine stream in `finally`, so no exit path
leaks a stream.

All messages to the client go through one queue and one writer task, so transcripts from the
inference thread and error replies from the reader keep their order.
"""

from __future__ import annotations

import asyncio
import enum
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from nemotron_speech.protocol import (
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
from nemotron_speech.server.inference import Event, InferenceWorker, StreamClosed
from nemotron_speech.server.metrics import ServerMetrics

log = logging.getLogger(__name__)


class State(enum.Enum):
    OPENING = "opening"
    STREAMING = "streaming"
    CLOSING = "closing"
    CLOSED = "closed"


class Session:
    """Serves one connection until it closes; `shutdown()` finalizes it for a server stop."""

    def __init__(
        self,
        websocket: ServerConnection,
        worker: InferenceWorker,
        ready: Ready,
        metrics: ServerMetrics,
        idle_timeout: float,
    ):
        self.websocket = websocket
        self.state = State.OPENING
        self._worker = worker
        self._ready = ready
        self._metrics = metrics
        self._idle_timeout = idle_timeout
        self._outbox: asyncio.Queue[Event | Ready] = asyncio.Queue()
        self._stream_id: int | None = None
        self._final_sent = asyncio.Event()  # set after each final is written
        self._last_message = 0.0  # loop time of the last message received

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        watchdog = None
        try:
            self._stream_id = await self._worker.open(self._outbox.put_nowait)
            self.state = State.STREAMING
            self._outbox.put_nowait(self._ready)
            watchdog = asyncio.create_task(self._watch_idle())
            await self._read()
        finally:
            self.state = State.CLOSED
            if self._stream_id is not None:
                self._worker.close(self._stream_id)
            writer.cancel()
            if watchdog is not None:
                watchdog.cancel()

    async def shutdown(self, timeout: float) -> None:
        """Reset the stream, send its final text, then close with 1001."""
        if self.state is State.STREAMING and self._stream_id is not None:
            self.state = State.CLOSING
            self._final_sent.clear()
            self._worker.finalize(self._stream_id, reset=True)
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
                    self._worker.feed(self._stream_id, message)
                    continue
                try:
                    command = parse_client_message(message)
                except ProtocolError as exc:
                    self._metrics.client_errors.inc(label="bad_message")
                    self._outbox.put_nowait(Error(str(exc)))
                    continue
                if isinstance(command, Finalize):
                    self._worker.finalize(self._stream_id)
                elif isinstance(command, Reset) and not command.finalize:
                    self._worker.flush(self._stream_id)
                else:  # a reset, or the end of the audio
                    self._worker.finalize(self._stream_id, reset=True)
        except ConnectionClosed as closed:
            if closed.sent is not None and closed.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self._metrics.client_errors.inc(label="too_big")

    async def _watch_idle(self) -> None:
        """Close the connection once no message came for the idle timeout. One timer per idle
        period, not one per message: the read loop only notes the time of each message."""
        loop = asyncio.get_running_loop()
        self._last_message = loop.time()
        while (left := self._last_message + self._idle_timeout - loop.time()) > 0:
            await asyncio.sleep(left)
        if self.state is State.STREAMING:
            self._metrics.client_errors.inc(label="idle_timeout")
            self._outbox.put_nowait(Error(f"no message for {self._idle_timeout:g} s"))
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
                await self.websocket.send(encode(event))
                if isinstance(event, Transcript) and event.finalize:
                    self._final_sent.set()
        except ConnectionClosed:
            return
