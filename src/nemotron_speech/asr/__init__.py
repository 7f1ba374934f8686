"""The streaming ASR engine (needs the `asr` extra: torch and NeMo).

The engine's names are imported on first use, so the torch-free modules of this package (`errors`,
`audio`) load without torch: `nemotron-speech eval --url` reads audio files on a machine that
only talks to a server.
"""

from typing import TYPE_CHECKING

from nemotron_speech.asr.errors import (
    AsrError,
    AudioFormatError,
    BufferFullError,
    ModelLoadError,
    ModelNotFoundError,
    StreamNotFoundError,
)

if TYPE_CHECKING:
    from nemotron_speech.asr.engine import AsrEngine
    from nemotron_speech.asr.reports import StepInfo, StreamTranscript

_ENGINE_NAMES = ("AsrEngine", "StepInfo", "StreamTranscript")

__all__ = [
    "AsrEngine",
    "AsrError",
    "AudioFormatError",
    "BufferFullError",
    "ModelLoadError",
    "ModelNotFoundError",
    "StepInfo",
    "StreamNotFoundError",
    "StreamTranscript",
]


def __getattr__(name: str):
    if name in _ENGINE_NAMES:
        from nemotron_speech.asr import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
