"""nemotron-speech: NVIDIA's open streaming ASR and Nemotron LLM as Pipecat services.

Importing this package is cheap: torch, NeMo and pipecat load only in the modules that need them,
so `from nemotron_speech import NemotronSTTService` imports pipecat but never torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nemotron_speech.services import (
        NemotronLLMService,
        NemotronLocalSTTService,
        NemotronSTTService,
    )

__version__ = "0.1.0"
__all__ = ["NemotronLLMService", "NemotronLocalSTTService", "NemotronSTTService"]


def __getattr__(name: str):
    """The Pipecat services, imported on first use (PEP 562)."""
    if name in __all__:
        from nemotron_speech import services

        return getattr(services, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
