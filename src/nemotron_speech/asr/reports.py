"""What an engine step reports: transcripts for the caller, and its own facts for metrics."""

from __future__ import annotations

from dataclasses import dataclass


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
    """What one `step()` did, for metrics."""

    batch_size: int
    model_calls: int
    seconds: float
    stream_ids: tuple[int, ...] = ()  # the streams that ran a chunk
