"""The ASR WebSocket protocol: the one definition of every wire message and close code.

Server, client and tests import this module, so it stays free of torch and NeMo. The messages are
those of the seed's server (`docs/protocol.md` is the readable spec); extensions add fields and
never change existing ones, and parsers ignore fields they do not know, so old and new peers keep
talking.

Audio travels as binary frames (PCM16 little-endian, 16 kHz, mono); everything else is a JSON
text frame with a `"type"` field.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

PROTOCOL_VERSION = 3  # 2: the `finalize` message; 3: interims' `audio_ms`
SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2  # bytes per PCM16 sample
BYTES_PER_MS = SAMPLE_RATE * SAMPLE_WIDTH // 1000


class CloseCode(IntEnum):
    """WebSocket close codes the server uses; each close also carries a reason text."""

    NORMAL = 1000  # the client closed, or the server finished a graceful close
    GOING_AWAY = 1001  # the server is shutting down (after sending the open streams' finals)
    POLICY_VIOLATION = 1008  # audio arrived faster than the server's buffer bound allows
    MESSAGE_TOO_BIG = 1009  # a frame over the server's size limit
    INTERNAL_ERROR = 1011  # the engine failed; the stream is gone
    TRY_AGAIN_LATER = 1013  # the server is at --max-streams or still loading the model
    IDLE_TIMEOUT = 4000  # no message for the server's idle timeout


class ProtocolError(ValueError):
    """A text frame that is not a valid message; the message says what to send instead."""


# -- client -> server ------------------------------------------------------------------------


@dataclass(frozen=True)
class Finalize:
    """End of an utterance inside a conversation (protocol version 2): the server pads
    right-context silence, sends the words not yet final, and keeps the stream's context, so
    words after a pause are recognised as in an uninterrupted stream. Audio may follow at once."""

    type: str = "finalize"


@dataclass(frozen=True)
class Reset:
    """`finalize=True` (the seed's default) resets: the server pads right-context silence, sends
    the words not yet final and starts a clean stream. `finalize=False` flushes: the server sends
    the current text and keeps all state."""

    finalize: bool = True
    type: str = "reset"


@dataclass(frozen=True)
class End:
    """End of the audio: a reset. The stream stays usable until the client closes."""

    type: str = "end"


ClientMessage = Finalize | Reset | End


# -- server -> client ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The stream is open; audio may flow. Fields past `type` are protocol version 1 additions."""

    protocol_version: int = PROTOCOL_VERSION
    sample_rate: int = SAMPLE_RATE
    chunk_ms: float = 0.0
    right_context: int = 0
    type: str = "ready"


@dataclass(frozen=True)
class Transcript:
    """Text of the current utterance. Interims (`is_final=False`) come only when the text changes.
    Finals answer a finalize, reset or end with `finalize=True` (the words since the previous
    such final), and a flush with `finalize=False` (the current text; nothing changes).

    `audio_ms` (version 3, interims only): how much of the connection's audio, in ms from its
    first byte, had to arrive for this text's chunk to be ready, so a client can time the answer
    from when it sent that audio. None (not sent) on chunks run between a finalize, reset or end
    and its final."""

    text: str
    is_final: bool = False
    finalize: bool = False
    audio_ms: float | None = None
    type: str = "transcript"


@dataclass(frozen=True)
class Error:
    """Something the client sent could not be used; the connection stays open unless a close
    frame follows."""

    message: str
    type: str = "error"


ServerMessage = Ready | Transcript | Error


# -- serialization ---------------------------------------------------------------------------


def encode(message: ClientMessage | ServerMessage) -> str:
    """JSON text of a message, `type` first as the seed's server wrote it; fields that are None
    are left out (an optional field a message does not carry)."""
    fields = {name: value for name, value in asdict(message).items() if value is not None}
    return json.dumps({"type": fields.pop("type"), **fields}, separators=(",", ":"))


def parse_client_message(text: str) -> ClientMessage:
    """Parse a client's text frame, or raise `ProtocolError` saying what was wrong."""
    fields = _json_object(text)
    kind = fields.get("type")
    if kind == "reset":
        finalize = fields.get("finalize", True)
        if not isinstance(finalize, bool):
            raise ProtocolError(
                f'"finalize" must be true or false, got {json.dumps(finalize)[:40]}'
            )
        return Reset(finalize=finalize)
    if kind == "end":
        return End()
    if kind == "finalize":
        return Finalize()
    raise ProtocolError(_unknown_type(kind, ("finalize", "reset", "end")))


def parse_server_message(text: str) -> ServerMessage:
    """Parse a server's text frame, or raise `ProtocolError` saying what was wrong."""
    fields = _json_object(text)
    kind = fields.get("type")
    try:
        if kind == "ready":
            return Ready(
                protocol_version=int(fields.get("protocol_version", 0)),
                sample_rate=int(fields.get("sample_rate", SAMPLE_RATE)),
                chunk_ms=float(fields.get("chunk_ms", 0.0)),
                right_context=int(fields.get("right_context", 0)),
            )
        if kind == "transcript":
            return Transcript(
                text=str(fields["text"]),
                is_final=bool(fields.get("is_final", False)),
                finalize=bool(fields.get("finalize", False)),
                audio_ms=_milliseconds(fields.get("audio_ms")),
            )
        if kind == "error":
            return Error(message=str(fields.get("message", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed {kind} message: {exc!r}") from None
    raise ProtocolError(_unknown_type(kind, ("ready", "transcript", "error")))


def _milliseconds(value: object) -> float | None:
    """An optional number field: absent (None) or a finite number, never a bool or a string."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"audio_ms must be a number of milliseconds, got {json.dumps(value)}")
    return float(value)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ProtocolError(
            f"text frames must be JSON messages ({exc}); send audio as binary frames"
        ) from None
    if not isinstance(value, dict):
        raise ProtocolError(
            f'a message must be a JSON object with a "type" field, got {type(value).__name__}'
        )
    return value


def _unknown_type(kind: object, known: tuple[str, ...]) -> str:
    if kind is None:
        return f'message has no "type" field; expected one of {", ".join(known)}'
    return f"unknown message type {json.dumps(kind)[:40]}; expected one of {', '.join(known)}"
