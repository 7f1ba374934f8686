"""Local text-to-speech for the voice pipelines: Kokoro (the Spark default) and espeak-ng.

- `kokoro`: pipecat's `KokoroTTSService` (Kokoro-82M through kokoro-onnx, Apache-2.0 weights,
  ONNX Runtime on the CPU, 24 kHz). Natural voice, no cloud; weights come from
  `nemotron-speech download tts` into `models/tts/` and are never fetched at run time, so a
  missing file fails at start-up with the command that fetches it.
- `espeak`: `EspeakTTSService`, robotic but weightless; runs on any box with `espeak-ng`.
"""

from __future__ import annotations

import os
from typing import Literal

from pipecat.services.tts_service import TTSService

from nemotron_speech.download import (
    KOKORO_MODEL,
    KOKORO_VOICES,
    models_dir,
    require_weights,
    tts_dir,
)
from nemotron_speech.tts.espeak import EspeakNotFoundError, EspeakTTSService

TtsKind = Literal["kokoro", "espeak"]
TTS_KINDS: tuple[TtsKind, ...] = ("kokoro", "espeak")
KOKORO_VOICE = "af_heart"

__all__ = [
    "TTS_KINDS",
    "EspeakNotFoundError",
    "EspeakTTSService",
    "TtsKind",
    "create_tts",
    "kokoro_tts",
]


def kokoro_tts(
    models: str | os.PathLike | None = None, *, voice: str = KOKORO_VOICE, **kwargs
) -> TTSService:
    """pipecat's Kokoro service on the weights under `models/tts/` (never downloads).

    Raises:
        FileNotFoundError: a weights file is missing; the message names `nemotron-speech
            download tts`.
        ImportError: kokoro-onnx is not installed.
    """
    root = tts_dir(models_dir(models))
    model = require_weights(root / KOKORO_MODEL, "tts")
    voices = require_weights(root / KOKORO_VOICES, "tts")
    try:
        from pipecat.services.kokoro.tts import KokoroTTSService
    except ImportError as exc:
        raise ImportError(
            "the Kokoro TTS needs kokoro-onnx: pip install 'pipecat-ai[kokoro]'"
        ) from exc
    return KokoroTTSService(
        model_path=str(model),
        voices_path=str(voices),
        settings=KokoroTTSService.Settings(voice=voice),
        **kwargs,
    )


def create_tts(
    kind: TtsKind, *, models: str | os.PathLike | None = None, voice: str | None = None, **kwargs
) -> TTSService:
    """The TTS service named `kind`; `kwargs` go to pipecat's `TTSService` (e.g. sample_rate)."""
    if kind == "kokoro":
        return kokoro_tts(models, voice=voice or KOKORO_VOICE, **kwargs)
    if kind == "espeak":
        settings = EspeakTTSService.Settings(voice=voice) if voice else None
        return EspeakTTSService(settings=settings, **kwargs)
    raise ValueError(f"unknown TTS {kind!r}; choose one of {', '.join(TTS_KINDS)}")
