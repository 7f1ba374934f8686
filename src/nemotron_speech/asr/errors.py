"""Errors the engine raises; every message says what was wrong and what to do about it."""


class AsrError(Exception):
    """Base class of every engine error."""


class ModelNotFoundError(AsrError, FileNotFoundError):
    """The model file does not exist."""

    def __init__(self, path: str):
        super().__init__(
            f"ASR model not found: {path}. Download it with `nemotron-speech download asr` "
            "(writes models/), or pass --model with the path of a cache-aware streaming .nemo file."
        )


class ModelLoadError(AsrError):
    """The file exists but is not a usable cache-aware streaming RNNT model."""


class AudioFormatError(AsrError, ValueError):
    """Audio that cannot be decoded or is in a format the engine cannot use."""


class StreamNotFoundError(AsrError, KeyError):
    """An operation named a stream that is not open."""

    def __str__(self) -> str:
        return str(self.args[0])


class BufferFullError(AsrError):
    """A stream was fed audio faster than the engine processes it, beyond the buffer bound."""
