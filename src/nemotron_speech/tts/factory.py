"""The TTS services the pipelines choose from by name (`create_tts`), built without downloads.

Imports pipecat (and, for Magpie, its service module; torch and NeMo only when it starts).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from pipecat.services.tts_service import TTSService

from nemotron_speech.download import (
    KOKORO_MODEL,
    KOKORO_VOICES,
    magpie_paths,
    models_dir,
    require_weights,
    tts_dir,
)
from nemotron_speech.tts import KOKORO_VOICE, TTS_KINDS, TtsKind
from nemotron_speech.tts.espeak import EspeakTTSService

if TYPE_CHECKING:
    from nemotron_speech.tts.magpie.engine import MagpieEngine


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


def magpie_tts(
    models: str | os.PathLike | None = None,
    *,
    voice: str | None = None,
    model_path: str | os.PathLike | None = None,
    codec_path: str | os.PathLike | None = None,
    device: str = "cuda",
    shared: bool = False,
    **kwargs,
) -> TTSService:
    """The in-process Magpie service on the checkpoints under `models/tts/` (or the given paths).

    Only the files are checked here; torch and NeMo load, and the model with them, when the
    pipeline starts. With `shared`, the model is loaded here instead, once per process, and every
    service made so shares it (the engine has a lock): what a bot serving sessions wants, since
    pipecat stops a session whose StartFrame or first audio waits for a load.

    Raises:
        FileNotFoundError: a checkpoint is missing; the message names `nemotron-speech download
            magpie`.
    """
    default_model, default_codec = magpie_paths(models_dir(models))
    model = require_weights(model_path or default_model, "magpie")
    codec = require_weights(codec_path or default_codec, "magpie")
    from nemotron_speech.tts.magpie.service import NemotronMagpieTTSService

    settings = NemotronMagpieTTSService.Settings(voice=voice) if voice else None
    if shared:
        kwargs["engine"] = _shared_magpie(str(model), str(codec), device)
    return NemotronMagpieTTSService(
        model_path=model, codec_path=codec, device=device, settings=settings, **kwargs
    )


@functools.cache
def _shared_magpie(model: str, codec: str, device: str) -> MagpieEngine:
    from nemotron_speech.tts.magpie.service import load_engine

    return load_engine(model, codec, device)


def create_tts(
    kind: TtsKind, *, models: str | os.PathLike | None = None, voice: str | None = None, **kwargs
) -> TTSService:
    """The TTS service named `kind`; `kwargs` go to its class (e.g. sample_rate; for magpie also
    model_path, codec_path and device)."""
    if kind == "kokoro":
        return kokoro_tts(models, voice=voice or KOKORO_VOICE, **kwargs)
    if kind == "magpie":
        return magpie_tts(models, voice=voice, **kwargs)
    if kind == "espeak":
        settings = EspeakTTSService.Settings(voice=voice) if voice else None
        return EspeakTTSService(settings=settings, **kwargs)
    raise ValueError(f"unknown TTS {kind!r}; choose one of {', '.join(TTS_KINDS)}")
