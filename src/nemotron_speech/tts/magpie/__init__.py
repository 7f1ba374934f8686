"""NVIDIA Magpie TTS in-process: the engine (torch + NeMo) and its Pipecat service.

Names load on first use, so `import nemotron_speech.tts.magpie` needs neither torch nor NeMo;
the errors are torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from nemotron_speech.tts.magpie.errors import (
    MagpieError,
    MagpieInputError,
    MagpieLoadError,
    MagpieModelNotFoundError,
)

if TYPE_CHECKING:
    from nemotron_speech.tts.magpie.engine import MagpieEngine
    from nemotron_speech.tts.magpie.service import NemotronMagpieTTSService

_LAZY = {
    "MagpieEngine": "nemotron_speech.tts.magpie.engine",
    "NemotronMagpieTTSService": "nemotron_speech.tts.magpie.service",
}
__all__ = [
    "MagpieEngine",
    "MagpieError",
    "MagpieInputError",
    "MagpieLoadError",
    "MagpieModelNotFoundError",
    "NemotronMagpieTTSService",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
