"""Local text-to-speech for the voice pipelines: Kokoro (the Spark default), Magpie, espeak-ng.

- `kokoro`: pipecat's `KokoroTTSService` (Kokoro-82M through kokoro-onnx, Apache-2.0 weights,
  ONNX Runtime on the CPU, 24 kHz). Natural voice, no cloud; weights come from
  `nemotron-speech download tts` into `models/tts/` and are never fetched at run time, so a
  missing file fails at start-up with the command that fetches it.
- `magpie`: `NemotronMagpieTTSService`, NVIDIA's Magpie TTS (NeMo) in-process, on a GPU beside
  the ASR and vLLM; checkpoints from `nemotron-speech download magpie` (needs the `asr` extra).
- `espeak`: `EspeakTTSService`, robotic but weightless; runs on any box with `espeak-ng`.

The package itself imports neither pipecat nor torch: the services load on first use (PEP 562),
so the Magpie engine (`tts.magpie.engine`) runs where only torch and NeMo are installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from nemotron_speech.tts.espeak import EspeakNotFoundError, EspeakTTSService
    from nemotron_speech.tts.factory import create_tts, kokoro_tts, magpie_tts

TtsKind = Literal["kokoro", "espeak", "magpie"]
TTS_KINDS: tuple[TtsKind, ...] = ("kokoro", "espeak", "magpie")
KOKORO_VOICE = "af_heart"

_LAZY = {
    "EspeakNotFoundError": "nemotron_speech.tts.espeak",
    "EspeakTTSService": "nemotron_speech.tts.espeak",
    "create_tts": "nemotron_speech.tts.factory",
    "kokoro_tts": "nemotron_speech.tts.factory",
    "magpie_tts": "nemotron_speech.tts.factory",
}
__all__ = [
    "KOKORO_VOICE",
    "TTS_KINDS",
    "EspeakNotFoundError",
    "EspeakTTSService",
    "TtsKind",
    "create_tts",
    "kokoro_tts",
    "magpie_tts",
]


def __getattr__(name: str):
    """Import a service's module on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
