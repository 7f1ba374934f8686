"""`AsrClient`: an asyncio client of the ASR WebSocket server.

It needs only `websockets` (no torch, no NeMo), so the Pipecat STT service and the examples run
where the model does not. Events are the typed messages of `nemotron_speech.protocol`:

    async with AsrClient.connect("ws://127.0.0.1:8080") as client:
        await client.send_audio(pcm16)
        await client.end()
        async for event in client:
            if isinstance(event, Transcript) and event.finalize:
                print(event.text)
                break
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websockets_connect
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
    """The server could not be reached, refused the connection or closed it.

    `code` says why when the server said: the HTTP status of a refused handshake (401: wrong
    token), or the WebSocket close code (1013: loading or at its stream limit; see
    `CloseCode`), with the server's `reason` text.
    """

    def __init__(self, message: str, code: int | None = None, reason: str = ""):
        super().__init__(message)
        self.code = code
        self.reason = reason

    @property
    def refused(self) -> bool:
        """The server answered the handshake with an HTTP 4xx: retrying will not help."""
        return self.code is not None and 400 <= self.code < 500


async def open_stream(
    url: str,
    token: str | None = None,
    *,
    connect: Callable[..., Awaitable[ClientConnection]] = websockets_connect,
    ready_timeout: float = 10.0,
    **options: Any,
) -> tuple[ClientConnection, Ready]:
    """Open one stream: the WebSocket handshake with the bearer token, then the server's `ready`.

    The one handshake of every client: `AsrClient` uses websockets' `connect`, the Pipecat STT
    service passes its own (pipecat's, with the service's send and close timeouts). `options` go
    to `connect`. Raises `AsrConnectionError` naming `url` and what the server said.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        # PCM barely compresses; deflate would only cost CPU on both ends
        websocket = await connect(url, additional_headers=headers, compression=None, **options)
    except InvalidStatus as exc:
        response = exc.response
        body = response.body.decode(errors="replace").strip()
        raise AsrConnectionError(
            f"the ASR server at {url} refused the connection: HTTP {response.status_code} "
            f"{body}".strip(),
            code=response.status_code,
            reason=body,
        ) from None
    except (OSError, TimeoutError) as exc:
        raise AsrConnectionError(f"cannot connect to the ASR server at {url}: {exc}") from exc
    try:
        async with asyncio.timeout(ready_timeout):
            first = parse_server_message(await websocket.recv())
    except ConnectionClosed as exc:
        raise _closed(exc, f"at {url} before it was ready") from None
    except (TimeoutError, ProtocolError) as exc:
        await websocket.close()
        raise AsrConnectionError(f"{url} is not a ready ASR server: {exc!r}") from None
    if not isinstance(first, Ready):
        await websocket.close()
        raise AsrConnectionError(f"{url} sent {first} instead of ready")
    return websocket, first


class AsrClient:
    """One stream on the server: send audio and finalize requests, iterate over transcripts and
    errors."""

    def __init__(self, websocket: ClientConnection, ready: Ready):
        self._websocket = websocket
        self.ready = ready

    @classmethod
    def connect(
        cls,
        url: str,
        token: str | None = None,
        open_timeout: float = 10.0,
        ready_timeout: float = 10.0,
        max_size: int = 2**20,
    ) -> _Connecting:
        """Open a stream (see `open_stream`); `await` it for a client, or `async with` it for
        one that is closed at the end of the block. Raises `AsrConnectionError`."""

        async def opened() -> AsrClient:
            websocket, ready = await open_stream(
                url, token, ready_timeout=ready_timeout, open_timeout=open_timeout,
                max_size=max_size,
            )  # fmt: skip
            return cls(websocket, ready)

        return _Connecting(opened)

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


class _Connecting:
    """`AsrClient.connect(...)`: awaitable (the client) and an async context manager."""

    def __init__(self, opened: Callable[[], Awaitable[AsrClient]]):
        self._opened = opened
        self._client: AsrClient | None = None

    def __await__(self) -> Generator[Any, None, AsrClient]:
        return self._opened().__await__()

    async def __aenter__(self) -> AsrClient:
        self._client = await self._opened()
        return self._client

    async def __aexit__(self, *exc_info) -> None:
        await self._client.close()


def _closed(exc: ConnectionClosed, when: str = "") -> AsrConnectionError:
    close = exc.rcvd or exc.sent
    code = close.code if close else None
    reason = close.reason if close else ""
    text = f"server closed the connection {when}".strip()
    return AsrConnectionError(f"{text}: {code} {reason}".strip(), code=code, reason=reason)
