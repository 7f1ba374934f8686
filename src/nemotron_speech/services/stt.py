"""`NemotronSTTService`: streaming speech-to-text through the nemotron-speech ASR server.

It speaks the WebSocket protocol of `nemotron_speech.protocol` (docs/protocol.md) and imports only
pipecat, websockets and that protocol module, so it runs where torch and NeMo are not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, VADUserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import WebsocketSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.types import NOT_GIVEN, NotGiven
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from nemotron_speech.client import AsrConnectionError, open_stream
from nemotron_speech.endpoints import ASR_URL
from nemotron_speech.protocol import (
    SAMPLE_RATE,
    Error,
    Finalize,
    ProtocolError,
    Ready,
    Reset,
    Transcript,
    encode,
    parse_server_message,
)
from nemotron_speech.services.common import (
    MODEL_NAME,
    RESET_AFTER_SECS,
    TranscriptFramesMixin,
    reject_unknown_kwargs,
)
from nemotron_speech.services.ttfs import NEMOTRON_TTFS_P99

REPLAY_FRAME_BYTES = 64 * 1024  # 2 s per frame: well under the server's 256 KiB message limit
Control = Finalize | Reset  # the finalize requests the service sends


@dataclass
class NemotronSTTSettings(STTSettings):
    """Settings for `NemotronSTTService`.

    Parameters:
        url: WebSocket URL of the ASR server (`python -m nemotron_speech.server`). Changing it at
            runtime moves to the new server once the user stops speaking; the words of an
            unfinished utterance are replayed there.
    """

    url: str | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class NemotronSTTService(TranscriptFramesMixin, WebsocketSTTService):
    """Streaming STT on the nemotron-speech ASR server (Nemotron Speech Streaming / Parakeet).

    Audio goes out as PCM16 16 kHz frames; the server's interims become
    `InterimTranscriptionFrame`s. On `VADUserStoppedSpeakingFrame` the service asks the server to
    finalize, and the answer becomes one `TranscriptionFrame(finalized=True)`, which lets the
    user-turn strategies end the turn at once instead of waiting `ttfs_p99_latency`. The
    finalize keeps the stream's context (a VAD stop may be a pause inside the user's turn, and a
    reset there costs the words after it); after `reset_after_secs` of silence the stream is
    reset, and a new connection starts clean.

    A dropped connection is re-opened by pipecat's `WebsocketService` machinery; whatever the
    server had not finalized (audio and finalize requests, bounded by `max_replay_secs`) is sent
    again on the new connection, so the words the user spoke meanwhile still arrive.

    Example::

        stt = NemotronSTTService(
            url="ws://gpu-box:8080", auth_token=os.environ.get("ASR_AUTH_TOKEN")
        )
    """

    Settings = NemotronSTTSettings
    _settings: Settings

    def __init__(
        self,
        *,
        url: str | None = None,
        auth_token: str | None = None,
        sample_rate: int | None = None,
        settings: Settings | None = None,
        ttfs_p99_latency: float = NEMOTRON_TTFS_P99,
        reset_after_secs: float | None = RESET_AFTER_SECS,
        max_replay_secs: float = 20.0,
        ready_timeout: float = 10.0,
        reconnect_attempts: int = 8,
        **kwargs,
    ):
        """Initialize the service.

        Args:
            url: WebSocket URL of the ASR server (default ws://localhost:8080); a `url` in
                `settings` wins, and `settings` is where to change it at runtime.
            auth_token: Bearer token the server was started with (`--auth-token`). Kept out of
                the settings, like every pipecat API key, because settings are logged.
            sample_rate: Input sample rate; audio at any rate is resampled to 16 kHz.
            settings: Runtime-updatable settings (see `NemotronSTTSettings`).
            ttfs_p99_latency: P99 from speech end to final transcript, in seconds. The default was
                measured with `benchmarks/services.py` (see `services/ttfs.py`); measure your
                own deployment (GPU, model, right context) and pass it.
            reset_after_secs: Silence after a VAD stop (seconds of audio) after which the
                stream is reset; shorter pauses keep the ASR context. None: never reset.
            max_replay_secs: Most audio kept for replay after a reconnect.
            ready_timeout: Seconds to wait for the server's `ready` after connecting.
            reconnect_attempts: Attempts before giving up on a lost connection. More than
                pipecat's 3: a restarting server loads its model first (answering 1013), which
                takes longer than three back-off waits.
            **kwargs: Passed to `WebsocketSTTService` (reconnect back-off, keepalive...);
                a keyword none of pipecat's base classes takes is a `TypeError`.
        """
        reject_unknown_kwargs(NemotronSTTService, kwargs)
        default_settings = self.Settings(model=MODEL_NAME, language=Language.EN, url=url or ASR_URL)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(
            sample_rate=sample_rate,
            ttfs_p99_latency=ttfs_p99_latency,
            settings=default_settings,
            **kwargs,
        )
        self._auth_token = auth_token
        self._reset_after_secs = reset_after_secs
        self._ready_timeout = ready_timeout
        self._reconnect_attempts = reconnect_attempts
        self._replay = _ReplayLog(2 * int(max_replay_secs * SAMPLE_RATE))
        self._send_lock = asyncio.Lock()
        self._receive_task: asyncio.Task | None = None
        self.server_ready: Ready | None = None  # the server's `ready`: chunk size, right context

    def can_generate_metrics(self) -> bool:
        """TTFB (speech end to final) and audio usage are reported."""
        return True

    async def setup(self, setup: FrameProcessorSetup):
        """Connect while the pipeline starts, so the first words are not waiting on a handshake."""
        await super().setup(setup)
        await self._connect()

    async def _update_settings(self, delta: STTSettings) -> dict[str, Any]:
        """Apply a settings delta; a new `url` reconnects once the user stops speaking."""
        changed = await super()._update_settings(delta)
        if "url" in changed:
            await self._request_reconnect()
        return changed

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Send audio (and a reset once a pause has become the end of the utterance);
        transcripts arrive on the receive task."""
        audio = await self._to_model_rate(audio)
        await self._send(audio)
        if self._reset_due(audio):
            await self._send(Reset())
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Finalize the utterance when the VAD says the user stopped speaking."""
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self.request_finalize()
            await self._send(Finalize())

    async def _send(self, message: bytes | Control) -> None:
        """Log `message` for replay, then send it if connected (a reconnect sends it otherwise)."""
        async with self._send_lock:
            self._replay.add(message)
            websocket = self._websocket
            if websocket is None or websocket.state is not State.OPEN:
                return
            # A closed connection is the receive loop's to notice; it reconnects and replays.
            with contextlib.suppress(ConnectionClosed):
                await websocket.send(self._wire(message, self.server_ready))

    @staticmethod
    def _wire(message: bytes | Control, ready: Ready | None) -> bytes | str:
        """A server older than protocol version 2 knows no `finalize`: it gets the seed's reset."""
        if isinstance(message, bytes):
            return message
        if isinstance(message, Finalize) and ready is not None and ready.protocol_version < 2:
            message = Reset()
        return encode(message)

    # -- connection ------------------------------------------------------------------------

    async def _connect(self):
        await super()._connect()
        try:
            await self._connect_websocket()
        except Exception as exc:
            if self.is_usable:  # a rejection was already reported as permanent
                await self._report_error(ErrorFrame(f"{self} {exc}", exception=exc))
        # Started even when connecting failed: with no socket the loop goes straight to its
        # reconnect path, which retries with back-off.
        if not self._receive_task:
            self._receive_task = self.create_task(self._receive_task_handler(self._report_error))

    async def _disconnect(self):
        await super()._disconnect()
        if self._receive_task:
            await self.cancel_task(self._receive_task, timeout=1.0)
            self._receive_task = None
        await self._disconnect_websocket()

    async def _connect_websocket(self):
        """Open a stream, wait for `ready`, replay what the server has not finalized yet.

        Raises `AsrConnectionError` (a `ConnectionError`) saying why when the server cannot be
        reached, refuses us (a 4xx, e.g. a wrong token, is also reported as permanent) or closes
        before `ready` (1013 while it loads the model or is at `--max-streams`).
        """
        if self._websocket and self._websocket.state is State.OPEN:
            return
        url = self._settings.url
        try:
            websocket, ready = await open_stream(
                url,
                self._auth_token,
                connect=self._websocket_connect,
                ready_timeout=self._ready_timeout,
            )
        except AsrConnectionError as exc:
            if exc.refused:  # a 4xx (wrong token) will not get better by retrying
                await self._report_error(ErrorFrame(f"{self} {exc}"), force_treat_as_permanent=True)
            raise
        async with self._send_lock:
            for message in self._replay.messages(REPLAY_FRAME_BYTES):
                await websocket.send(self._wire(message, ready))
            self._websocket = websocket
            self.server_ready = ready
        logger.debug(f"{self} connected to {url}: {ready}")
        await self._call_event_handler("on_connected")

    async def _try_reconnect(self, max_retries: int | None = None, report_error=None) -> bool:
        return await super()._try_reconnect(max_retries or self._reconnect_attempts, report_error)

    async def _disconnect_websocket(self):
        try:
            if self._websocket:
                await self._websocket.close()
        finally:
            self._websocket = None
            await self._call_event_handler("on_disconnected")

    # -- server messages -------------------------------------------------------------------

    async def _receive_messages(self):
        """Turn server messages into frames (the base class reconnects when this ends)."""
        websocket = self._websocket
        if websocket is None:
            raise ConnectionError(f"{self} is not connected")
        async for message in websocket:
            try:
                event = parse_server_message(message)
            except ProtocolError as exc:
                logger.warning(f"{self} ignoring a server message: {exc}")
                continue
            if isinstance(event, Error):
                await self.push_error(f"{self} ASR server error: {event.message}")
            elif isinstance(event, Transcript) and not event.is_final:
                await self._push_interim(event.text, event)
            elif isinstance(event, Transcript) and event.finalize:
                self._replay.confirm_final()
                await self._push_final(event.text, event)


class _ReplayLog:
    """What the server has not finalized yet: audio and finalize requests, in order.

    The server keeps an utterance's audio until it finalizes it, so a server that dies or
    restarts loses the words in flight; sending this log again on the next connection recovers
    them. Memory stays bounded: past `max_bytes` of audio the oldest audio goes first.
    """

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._items: deque[bytearray | Control] = deque()
        self._audio_bytes = 0

    def add(self, message: bytes | Control) -> None:
        if not isinstance(message, bytes):
            self._items.append(message)
            return
        if self._items and isinstance(self._items[-1], bytearray):
            self._items[-1] += message
        else:
            self._items.append(bytearray(message))
        self._audio_bytes += len(message)
        if self._audio_bytes > self._max_bytes:
            self._drop_oldest(self._audio_bytes - self._max_bytes)

    def _drop_oldest(self, excess: int) -> None:
        for item in self._items:
            if isinstance(item, bytearray):
                cut = min(excess, len(item))
                del item[:cut]
                self._audio_bytes -= cut
                excess -= cut
                if not excess:
                    return

    def confirm_final(self) -> None:
        """The server finalized the oldest utterance: forget it, up to its finalize request
        (everything, when the server finalized on its own, as it does when shutting down)."""
        while self._items:
            item = self._items.popleft()
            if not isinstance(item, bytearray):
                return
            self._audio_bytes -= len(item)

    def messages(self, max_frame_bytes: int) -> Iterator[bytes | Control]:
        """The log in order: audio in frames of at most `max_frame_bytes`, and requests."""
        for item in self._items:
            if not isinstance(item, bytearray):
                yield item
                continue
            for start in range(0, len(item), max_frame_bytes):
                yield bytes(item[start : start + max_frame_bytes])
