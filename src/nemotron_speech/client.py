"""`AsrClient`: an asyncio client of the ASR WebSocket server.

It needs only `websockets` (no torch, no NeMo), so the Pipecat STT service and the examples run
where the model does not. Events are the typed messages of `nemotron_speech.protocol`:

    async with await AsrClient.connect("ws://127.0.0.1:8080") as client:
        await client.send_audio(pcm16)
        await client.end()
        async for event in client:
            if isinstance(event, Transcript) and event.finalize:
                print(event.text)
                break
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nemotron_speech.protocol import (
    End,
    Error,
    Finalize,
    ProtocolError,
    Ready,
    Reset,
    Transcript,
    encode,
    parse_server_message,
)


class AsrConnectionError(ConnectionError):
    """The server refused the connection or closed it; `code`/`reason` say why when it said."""

    def __init__(self, message: str, code: int | None = None, reason: str = ""):
        super().__init__(message)
        self.code = code
        self.reason = reason


class AsrClient:
    """One stream on the server: send audio and resets, iterate over transcripts and errors."""

    def __init__(self, websocket: ClientConnection, ready: Ready):
        self._websocket = websocket
        self.ready = ready

    @classmethod
    async def connect(
        cls, url: str, token: str | None = None, open_timeout: float = 10.0, max_size: int = 2**20
    ) -> AsrClient:
        """Open a connection and wait for the server's `ready`; raises `AsrConnectionError`."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            websocket = await connect(
                url,
                additional_headers=headers,
                open_timeout=open_timeout,
                max_size=max_size,
                compression=None,  # PCM barely compresses; deflate would only cost CPU
            )
        except InvalidStatus as exc:
            response = exc.response
            body = response.body.decode(errors="replace").strip()
            raise AsrConnectionError(
                f"server refused the connection: HTTP {response.status_code} {body}".strip(),
                code=response.status_code,
                reason=body,
            ) from None
        except (OSError, TimeoutError) as exc:
            raise AsrConnectionError(f"cannot connect to {url}: {exc}") from exc
        try:
            first = parse_server_message(await websocket.recv())
        except ConnectionClosed as exc:
            raise _closed(exc, "before it was ready") from None
        except ProtocolError as exc:
            await websocket.close()
            raise AsrConnectionError(f"not an ASR server: {exc}") from None
        if not isinstance(first, Ready):
            await websocket.close()
            raise AsrConnectionError(f"expected a ready message first, got {first}")
        return cls(websocket, first)

    async def __aenter__(self) -> AsrClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def send_audio(self, pcm16: bytes) -> None:
        """Send PCM16 little-endian 16 kHz mono audio (any length; odd bytes are carried)."""
        await self._send(pcm16)

    async def flush(self) -> None:
        """The server answers with the current text (`finalize=False`); nothing changes."""
        await self._send(encode(Reset(finalize=False)))

    async def finalize(self) -> None:
        """The server answers with the words since the last final and keeps the stream's
        context (a pause inside a turn); audio may follow at once. Needs protocol version 2."""
        await self._send(encode(Finalize()))

    async def reset(self) -> None:
        """The server answers with the words since the last final and starts a clean stream."""
        await self._send(encode(Reset(finalize=True)))

    async def end(self) -> None:
        """End of audio: a reset; the stream stays usable until `close()`."""
        await self._send(encode(End()))

    async def recv(self) -> Transcript | Error:
        """The next transcript or error; raises `AsrConnectionError` once the connection closed."""
        try:
            message = await self._websocket.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        event = parse_server_message(message)
        if isinstance(event, Ready):
            raise ProtocolError("server sent a second ready message")
        return event

    async def __aiter__(self) -> AsyncIterator[Transcript | Error]:
        """Events until the connection closes (normally or not; see `close_code`)."""
        while True:
            try:
                yield await self.recv()
            except AsrConnectionError:
                return

    @property
    def close_code(self) -> int | None:
        return self._websocket.close_code

    @property
    def close_reason(self) -> str | None:
        return self._websocket.close_reason

    async def close(self) -> None:
        """Close the connection; the server frees the stream."""
        await self._websocket.close()

    async def _send(self, data: str | bytes) -> None:
        try:
            await self._websocket.send(data)
        except ConnectionClosed as exc:
            raise _closed(exc) from None


def _closed(exc: ConnectionClosed, when: str = "") -> AsrConnectionError:
    close = exc.rcvd or exc.sent
    code = close.code if close else None
    reason = close.reason if close else ""
    text = f"server closed the connection {when}".strip()
    return AsrConnectionError(f"{text}: {code} {reason}".strip(), code=code, reason=reason)
