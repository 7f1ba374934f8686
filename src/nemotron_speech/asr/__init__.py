"""The streaming ASR engine (needs the `asr` extra: torch and NeMo)."""

from nemotron_speech.asr.engine import AsrEngine, StepInfo, Transcript
from nemotron_speech.asr.errors import (
    AsrError,
    AudioFormatError,
    BufferFullError,
    ModelLoadError,
    ModelNotFoundError,
    StreamNotFoundError,
)

__all__ = [
    "AsrEngine",
    "AsrError",
    "AudioFormatError",
    "BufferFullError",
    "ModelLoadError",
    "ModelNotFoundError",
    "StepInfo",
    "StreamNotFoundError",
    "Transcript",
]
