"""Pipecat services: streaming STT (over the ASR server, or in-process) and the vLLM Nemotron LLM.

Names load lazily, so `NemotronSTTService` never pulls in torch and NeMo, and
`NemotronLocalSTTService` loads them only when its pipeline starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nemotron_speech.services.llm import NemotronLLMService
    from nemotron_speech.services.local_stt import NemotronLocalSTTService
    from nemotron_speech.services.stt import NemotronSTTService

MODULES = {
    "NemotronSTTService": "nemotron_speech.services.stt",
    "NemotronLocalSTTService": "nemotron_speech.services.local_stt",
    "NemotronLLMService": "nemotron_speech.services.llm",
}
__all__ = ["NemotronLLMService", "NemotronLocalSTTService", "NemotronSTTService"]


def __getattr__(name: str):
    """Import a service's module on first use (PEP 562)."""
    if name not in MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(MODULES[name]), name)
