"""`NemotronMagpieTTSService`: NVIDIA's Magpie TTS inside the pipeline's process.

pipecat's `NvidiaTTSService` speaks Magpie through Riva/NIM over gRPC; this one runs the NeMo
checkpoint itself (`MagpieEngine`), so the bot needs no NIM container. Every engine call runs on
one dedicated thread (the engine is synchronous, and inference must not block the event loop);
torch and NeMo are imported on that thread when the service starts, not when this module loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, ErrorFrame, Frame, StartFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language, resolve_language
from pipecat.utils.tracing.service_decorators import traced_tts

from nemotron_speech.tts.magpie.errors import MagpieInputError

if TYPE_CHECKING:
    from nemotron_speech.tts.magpie.engine import MagpieEngine

MODEL_NAME = "magpie_tts_multilingual_357m"
# The languages magpie_tts_multilingual_357m is published with; a checkpoint says which it has
LANGUAGES = {
    Language.EN: "en",
    Language.ES: "es",
    Language.DE: "de",
    Language.FR: "fr",
    Language.IT: "it",
    Language.VI: "vi",
    Language.ZH: "zh",
    Language.HI: "hi",
    Language.JA: "ja",
}
_DONE = object()  # end of one request's audio on the queue


@dataclass
class NemotronMagpieTTSSettings(TTSSettings):
    """Settings for `NemotronMagpieTTSService`: `voice` is a speaker of the checkpoint ("0".. or
    the names the engine was given), `language` one it speaks."""


class NemotronMagpieTTSService(TTSService):
    """Magpie TTS in-process: audio streams out a few codec frames at a time.

    The first audio of a sentence comes after `first_chunk_frames` codec frames (~190 ms of
    speech), not after the whole sentence. An interruption stops the engine at its next decoder
    step. TTFB and usage metrics are reported. Magpie gives no word timestamps, and none are
    guessed: like pipecat's Kokoro and Piper services, this one leaves `push_text_frames` on, so
    each sentence's text follows its audio as one `TTSTextFrame` (docs/tts.md).

    Example::

        tts = NemotronMagpieTTSService(
            model_path="models/tts/magpie/magpie_tts_multilingual_357m.nemo",
            codec_path="models/tts/nanocodec/nemo-nano-codec-22khz-1.89kbps-21.5fps.nemo",
            device="cuda",
            settings=NemotronMagpieTTSService.Settings(voice="2"),
        )
    """

    Settings = NemotronMagpieTTSSettings
    _settings: Settings

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        codec_path: str | Path | None = None,
        engine: MagpieEngine | None = None,
        device: str = "cpu",
        engine_options: dict | None = None,
        settings: Settings | None = None,
        **kwargs,
    ):
        """Initialize the service with checkpoints to load or an engine to use.

        Args:
            model_path: The Magpie `.nemo`, loaded (and warmed up) on the engine thread when the
                pipeline starts.
            codec_path: Its audio codec `.nemo` (the Magpie file only names it).
            engine: An already loaded engine instead; it may be shared (it has a lock).
            device: "cpu", "cuda" or "cuda:N" when loading.
            engine_options: Keyword arguments for `MagpieEngine` when loading (chunk sizes,
                precision, voice names, `steps`: CUDA graphs on a CUDA device unless told).
            settings: Runtime-updatable settings (voice, language).
            **kwargs: Additional arguments passed to the parent `TTSService`.
        """
        if engine is None and (model_path is None or codec_path is None):
            raise ValueError("pass engine=, or both model_path= and codec_path=")
        default_settings = self.Settings(model=MODEL_NAME, voice=None, language=Language.EN)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(
            push_start_frame=True, push_stop_frames=True, settings=default_settings, **kwargs
        )
        self._paths = (model_path, codec_path)
        self._device = device
        self._engine_options = engine_options or {}
        self._engine = engine
        self._executor: ThreadPoolExecutor | None = None

    def can_generate_metrics(self) -> bool:
        """TTFB (text in -> first audio out) and usage metrics are reported."""
        return True

    def language_to_service_language(self, language: Language) -> str:
        """The engine's language code (base code: en-US -> en)."""
        return resolve_language(language, LANGUAGES, use_base_code=True)

    async def start(self, frame: StartFrame):
        """Start the engine thread, and load the checkpoints on it when none was given."""
        await super().start(frame)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemotron-magpie")
        if self._engine is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            self._engine = await loop.run_in_executor(self._executor, self._load)
        except Exception as exc:  # no model, no speech: say why once
            message = f"{self} cannot start the Magpie engine: {exc}"
            await self.push_error(message, exception=exc, force_treat_as_permanent=True)

    async def stop(self, frame: EndFrame):
        await super().stop(frame)
        self._close()

    async def cancel(self, frame: CancelFrame):
        await super().cancel(frame)
        self._close()

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Speak `text`, yielding audio while the engine is still generating.

        Args:
            text: The text to speak.
            context_id: Unique identifier for this TTS context.
        """
        if self._engine is None or self._executor is None:
            yield ErrorFrame(error=f"{self}: the Magpie engine is not loaded")
            return
        language = self._settings.language
        if isinstance(language, Language):
            language = self.language_to_service_language(language)
        voice = self._settings.voice or None
        stop = threading.Event()  # set when this generator is closed: an interruption
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def speak() -> None:  # on the engine thread
            def put(item) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                    loop.call_soon_threadsafe(queue.put_nowait, item)

            try:
                self._engine.stream(text, put, voice, language, should_stop=stop.is_set)
            except Exception as exc:  # handed to the event loop, raised there
                put(exc)
            finally:
                put(_DONE)

        try:
            await self.start_tts_usage_metrics(text)
            loop.run_in_executor(self._executor, speak)
            async for frame in self._stream_audio_frames_from_iterator(
                _pcm(queue), in_sample_rate=self._engine.sample_rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        except MagpieInputError as exc:
            yield ErrorFrame(error=f"{self}: {exc}")
        finally:
            stop.set()
            await self.stop_ttfb_metrics()
            logger.trace(f"{self}: finished TTS [{text}]")

    def _load(self) -> MagpieEngine:
        model_path, codec_path = self._paths
        return load_engine(model_path, codec_path, self._device, **self._engine_options)

    def _close(self) -> None:
        """Stop the thread (idempotent: stop and cancel both call it)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


def load_engine(
    model_path: str | Path, codec_path: str | Path, device: str, **options
) -> MagpieEngine:
    """Load the checkpoints (torch and NeMo with them) and run one warm-up sentence."""
    from nemotron_speech.tts.magpie.engine import MagpieEngine

    logger.info(f"loading Magpie {model_path} on {device}")
    engine = MagpieEngine.load(model_path, codec_path, device, **options)
    engine.warmup()
    return engine


async def _pcm(queue: asyncio.Queue) -> AsyncIterator[bytes]:
    """16-bit PCM of the float chunks the engine thread puts on `queue`, until it is done."""
    while (item := await queue.get()) is not _DONE:
        if isinstance(item, Exception):
            raise item
        yield (np.clip(item, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
