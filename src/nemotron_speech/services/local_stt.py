"""`NemotronLocalSTTService`: the streaming ASR engine inside the pipeline's process.

No server, no WebSocket: the service owns an `AsrEngine` and runs every engine call on one
dedicated thread (the engine is not thread-safe, and inference must not block the event loop).
torch and NeMo are imported on that thread when the service starts, not when this module loads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    StartFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import STTService
from pipecat.transcriptions.language import Language

from nemotron_speech.services.common import (
    MODEL_NAME,
    RESET_AFTER_SECS,
    TranscriptFramesMixin,
    reject_unknown_kwargs,
)
from nemotron_speech.services.ttfs import NEMOTRON_LOCAL_TTFS_P99

if TYPE_CHECKING:
    from nemotron_speech.asr import AsrEngine, StreamTranscript

T = TypeVar("T")


@dataclass
class NemotronLocalSTTSettings(STTSettings):
    """Settings for `NemotronLocalSTTService` (the model is fixed when the engine loads)."""


class NemotronLocalSTTService(TranscriptFramesMixin, STTService):
    """Streaming STT with the engine in-process: same frames and finalize as `NemotronSTTService`.

    Interims become `InterimTranscriptionFrame`s when the text changes; on
    `VADUserStoppedSpeakingFrame` the utterance is finalized (right-context silence padded) and
    pushed as one `TranscriptionFrame(finalized=True)`; the stream keeps its context, so a pause
    inside the user's turn costs no words, until `reset_after_secs` of silence reset it.

    Example::

        stt = NemotronLocalSTTService(model_path="models/nemotron-speech-streaming.nemo",
                                      device="cuda", right_context=1)
    """

    Settings = NemotronLocalSTTSettings
    _settings: Settings

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        engine: AsrEngine | None = None,
        right_context: int | None = None,
        device: str = "cpu",
        sample_rate: int | None = None,
        settings: Settings | None = None,
        ttfs_p99_latency: float = NEMOTRON_LOCAL_TTFS_P99,
        reset_after_secs: float | None = RESET_AFTER_SECS,
        **kwargs,
    ):
        """Initialize the service with a model to load or an engine to take over.

        Args:
            model_path: A cache-aware streaming `.nemo`, loaded (and warmed up) on the engine
                thread when the pipeline starts.
            engine: An already loaded engine instead; the service then owns it, so nothing
                else may call it while the service runs.
            right_context: Attention right context in 80 ms frames when loading `model_path`
                (default: the model's).
            device: "cpu", "cuda" or "cuda:N" when loading `model_path`.
            sample_rate: Input sample rate; audio at any rate is resampled to 16 kHz.
            settings: Runtime-updatable settings.
            ttfs_p99_latency: P99 from speech end to final transcript, in seconds (measured, see
                `services/ttfs.py`; measure your own GPU and model).
            reset_after_secs: Silence after a VAD stop (seconds of audio) after which the
                stream is reset; shorter pauses keep the ASR context. None: never reset.
            **kwargs: Passed to `STTService`; a keyword it does not take is a `TypeError`.
        """
        reject_unknown_kwargs(NemotronLocalSTTService, kwargs)
        if (model_path is None) == (engine is None):
            raise ValueError("pass exactly one of model_path= and engine=")
        default_settings = self.Settings(model=MODEL_NAME, language=Language.EN)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(
            sample_rate=sample_rate,
            ttfs_p99_latency=ttfs_p99_latency,
            settings=default_settings,
            **kwargs,
        )
        self._reset_after_secs = reset_after_secs
        self._model_path = model_path
        self._right_context = right_context
        self._device = device
        self._engine = engine
        self._stream_id: int | None = None
        self._executor: ThreadPoolExecutor | None = None

    def can_generate_metrics(self) -> bool:
        """TTFB (speech end to final) and audio usage are reported."""
        return True

    async def start(self, frame: StartFrame):
        """Load the model if needed and open the stream before any audio arrives."""
        await super().start(frame)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemotron-asr")
        try:
            self._stream_id = await self._on_engine_thread(self._open_stream)
        except Exception as exc:  # no model, no transcripts: say why once, then stay quiet
            message = f"{self} cannot start the ASR engine: {exc}"
            await self.push_error(message, exception=exc, force_treat_as_permanent=True)

    async def stop(self, frame: EndFrame):
        await super().stop(frame)
        await self._close()

    async def cancel(self, frame: CancelFrame):
        await super().cancel(frame)
        await self._close()

    async def cleanup(self):
        await super().cleanup()
        await self._close()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Feed audio and run every chunk it completes; push the interims that changed."""
        if self._stream_id is not None:
            audio = await self._to_model_rate(audio)
            for transcript in await self._on_engine_thread(self._feed, audio):
                await self._push_interim(transcript.text, transcript)
            if self._reset_due(audio):
                final = await self._on_engine_thread(self._finalize, True)
                await self._push_final(final.text, final)
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Finalize the utterance when the VAD says the user stopped speaking."""
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame) and self._stream_id is not None:
            self.request_finalize()
            final = await self._on_engine_thread(self._finalize, False)
            await self._push_final(final.text, final)

    async def _on_engine_thread(self, function: Callable[..., T], *args) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    async def _close(self) -> None:
        """Free the stream and stop the thread (idempotent: stop and cleanup both call it)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if self._stream_id is not None:
            stream_id, self._stream_id = self._stream_id, None
            await asyncio.get_running_loop().run_in_executor(
                executor, self._engine.close, stream_id
            )
        executor.shutdown(wait=False)

    # -- on the engine thread ----------------------------------------------------------------

    def _open_stream(self) -> int:
        if self._engine is None:
            from nemotron_speech.asr import AsrEngine

            logger.info(f"{self} loading {self._model_path} on {self._device}")
            self._engine = AsrEngine.load(
                self._model_path,
                right_context=self._right_context,
                device=self._device,
                max_graph_batch=1,  # one stream per service: bigger graph buckets only hold memory
            )
            self._engine.warmup()
        return self._engine.open_stream()

    def _feed(self, audio: bytes) -> list[StreamTranscript]:
        engine = self._engine
        engine.feed(self._stream_id, audio)
        results: list[StreamTranscript] = []
        while True:  # every chunk the audio completed (one, mostly)
            results.extend(engine.step(only=(self._stream_id,)))
            if not engine.last_step.batch_size:
                return results

    def _finalize(self, reset: bool) -> StreamTranscript:
        return self._engine.finalize(self._stream_id, reset=reset)
