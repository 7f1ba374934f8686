"""Errors the Magpie engine raises; every message says what was wrong and what to do about it.

Torch-free, so callers (the service, the bot's start-up checks) can catch them without NeMo.
"""

from __future__ import annotations


class MagpieError(Exception):
    """Base class of every Magpie engine error."""


class MagpieModelNotFoundError(MagpieError, FileNotFoundError):
    """A checkpoint file does not exist."""

    def __init__(self, what: str, path: str):
        super().__init__(
            f"Magpie {what} not found: {path}. Download both checkpoints with "
            "`nemotron-speech download magpie` (writes models/tts/), or pass the path of the "
            f"{what} .nemo file."
        )


class MagpieLoadError(MagpieError):
    """The files exist but are not a Magpie model and codec the engine can use."""


class MagpieInputError(MagpieError, ValueError):
    """A request the model cannot speak: empty or too long text, unknown voice or language."""
