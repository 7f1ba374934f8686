"""`EspeakTTSService`: offline text-to-speech through the `espeak-ng` command.

The voice is robotic, but it needs no weights, no GPU and no network, so the bundled bot runs end
to end on any Linux box (a laptop, CI) and the pipeline tests hear real speech come out.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven, assert_given

ESPEAK_SAMPLE_RATE = 22_050  # what espeak-ng's voices write
WAV_HEADER_BYTES = 44  # espeak-ng --stdout writes a plain 44-byte RIFF header
READ_BYTES = 4_410  # 100 ms at 22.05 kHz: small reads keep time-to-first-audio low


class EspeakNotFoundError(RuntimeError):
    """`espeak-ng` is not on PATH."""


def find_espeak(executable: str = "espeak-ng") -> str:
    """Path of the espeak-ng binary, or an error that says how to install it."""
    path = shutil.which(executable)
    if path is None:
        raise EspeakNotFoundError(
            f"{executable!r} not found on PATH: install it with `apt-get install espeak-ng` "
            "(Debian/Ubuntu) or pick another TTS (--tts kokoro)"
        )
    return path


@dataclass
class EspeakTTSSettings(TTSSettings):
    """Settings for `EspeakTTSService`.

    Parameters:
        rate: Speaking rate in words per minute (espeak-ng's `-s`).
    """

    rate: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class EspeakTTSService(TTSService):
    """Local TTS that runs one `espeak-ng --stdout` process per sentence.

    Audio is streamed from the process as it is written, so the first frame leaves long before a
    long sentence is fully synthesized. `voice` is an espeak-ng voice name (`espeak-ng --voices`).

    Example::

        tts = EspeakTTSService(settings=EspeakTTSService.Settings(voice="en-us", rate=170))
    """

    Settings = EspeakTTSSettings
    _settings: Settings

    def __init__(
        self, *, executable: str = "espeak-ng", settings: Settings | None = None, **kwargs
    ):
        """Initialize the service; fails at once when espeak-ng is missing.

        Args:
            executable: Name or path of the espeak-ng binary.
            settings: Runtime-updatable settings (voice, rate).
            **kwargs: Additional arguments passed to the parent `TTSService`.
        """
        default_settings = self.Settings(model=None, voice="en-us", language=Language.EN, rate=175)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(
            push_start_frame=True, push_stop_frames=True, settings=default_settings, **kwargs
        )
        self._executable = find_espeak(executable)

    def can_generate_metrics(self) -> bool:
        """TTFB (text in -> first audio out) and usage metrics are reported."""
        return True

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Synthesize `text`, yielding audio frames while espeak-ng is still writing.

        Args:
            text: The text to speak.
            context_id: Unique identifier for this TTS context.
        """
        voice = assert_given(self._settings.voice)
        rate = assert_given(self._settings.rate)
        process = await asyncio.create_subprocess_exec(
            self._executable,
            "--stdout",
            "-v",
            voice,
            "-s",
            str(rate),
            "--",
            text,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await self.start_tts_usage_metrics(text)
            async for frame in self._stream_audio_frames_from_iterator(
                self._pcm(process), in_sample_rate=ESPEAK_SAMPLE_RATE, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
            if await process.wait() != 0:
                stderr = (await process.stderr.read()).decode(errors="replace").strip()
                yield ErrorFrame(error=f"espeak-ng failed ({process.returncode}): {stderr}")
        finally:
            if process.returncode is None:  # interrupted mid-sentence
                process.kill()
                await process.wait()
            await self.stop_ttfb_metrics()
            logger.trace(f"{self}: finished TTS [{text}]")

    @staticmethod
    async def _pcm(process: asyncio.subprocess.Process) -> AsyncIterator[bytes]:
        """PCM16 bytes from espeak-ng's stdout, header dropped, always whole samples."""
        assert process.stdout is not None
        header = await process.stdout.readexactly(WAV_HEADER_BYTES)
        rate = int.from_bytes(header[24:28], "little")
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(f"espeak-ng wrote {rate} Hz audio, expected {ESPEAK_SAMPLE_RATE}")
        carry = b""
        while chunk := await process.stdout.read(READ_BYTES):
            chunk = carry + chunk
            whole = len(chunk) & ~1
            carry = chunk[whole:]
            if whole:
                yield chunk[:whole]
