"""What an engine step reports: transcripts for the caller, and its own facts for metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch stays out of what merely reports
    from nemotron_speech.asr.stream import StreamState
    from nemotron_speech.asr.transfer import HostCopy


@dataclass(frozen=True)
class StreamTranscript:
    """A stream's text: an interim whenever it changed, or the final text of an utterance."""

    stream_id: int
    text: str
    is_final: bool
    token_ids: tuple[int, ...] = ()  # set on finals: the utterance's exact token ids
    # set on interims of full chunks: the client audio (bytes) whose arrival made the text
    # available (`StreamState.advance`), so a server can time it
    audio_bytes: int | None = None


@dataclass(frozen=True)
class StepInfo:
    """What one `step()` did, for metrics; `seconds`: the time spent in its launch and its
    finish (finishing includes waiting for the device), not the time in between."""

    batch_size: int
    model_calls: int
    seconds: float
    stream_ids: tuple[int, ...] = ()  # the streams that ran a chunk


@dataclass
class LaunchedStep:
    """A step whose chunks run on the device; `AsrEngine.finish` reads it."""

    streams: list[StreamState]  # the streams that ran a chunk, in row order
    audio_bytes: list[int | None]  # each one's `chunk_client_bytes` for this chunk
    groups: list[list[int]]  # the model calls' rows
    labels: HostCopy  # each call's labels, on their way to the host
    finals: list[StreamTranscript]  # finals delivered without a chunk
    seconds: float  # the launch's own time
