"""The commands connections send the scheduler, and the events it sends back.

Every command and event is a small picklable dataclass, so the same messages cross a thread's
queue (`inference.py`) or a process's pipe (`engine_process.py`); events are addressed by the
connection's `key`, never a callable.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from nemotron_speech.protocol import CloseCode, Error, Transcript


@dataclass(frozen=True)
class StreamClosed:
    """Sent to a connection whose stream the scheduler had to end; the connection closes."""

    code: CloseCode
    reason: str


@dataclass(frozen=True)
class Consumed:
    """The engine has run every byte of this stream's audio up to `total_bytes` (counted from
    the stream's first byte) but less than one chunk: what the connection's bound subtracts.
    `next_chunk_at`: the stream's byte count at which its next chunk is ready (None while it
    finalizes), so the connection can hold audio short of it (`session.py`)."""

    total_bytes: int
    next_chunk_at: int | None = None


@dataclass(frozen=True)
class Interim:
    """An interim transcript, and the client audio (bytes from the stream's first) whose arrival
    made it available (None where a finalize did): the connection times its lag, split at when
    the scheduler had that chunk (`ready_at`) and when the step's results were out (`done_at`;
    both `time.perf_counter()`, the clock of the connection's event loop too)."""

    transcript: Transcript
    audio_bytes: int | None
    ready_at: float | None = None
    done_at: float | None = None


@dataclass(frozen=True)
class Opened:
    """The answer to `Open`: the engine stream's id."""

    stream_id: int


Event = Transcript | Interim | Error | StreamClosed | Consumed | Opened
# what a stream gets when the engine fails under it (a bug in a step, or a dead engine process)
ENGINE_FAILURE = (
    Error("internal error in the ASR engine; reconnect"),
    StreamClosed(CloseCode.INTERNAL_ERROR, "engine failure"),
)


@dataclass(frozen=True)
class Open:
    key: Hashable  # the connection's: every event of the stream is addressed to it


@dataclass(frozen=True)
class Feed:
    stream_id: int
    data: bytes


@dataclass(frozen=True)
class Finalize:
    stream_id: int
    reset: bool
    received_at: float  # time.perf_counter(): the system's monotonic clock, same in every process


@dataclass(frozen=True)
class Flush:
    stream_id: int


@dataclass(frozen=True)
class Close:
    stream_id: int


@dataclass(frozen=True)
class Stop:
    """Finish the commands before this one, then end `serve()`."""


Command = Open | Feed | Finalize | Flush | Close | Stop
