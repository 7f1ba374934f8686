"""What the two Nemotron STT services share: 16 kHz input and how transcripts become frames."""

from __future__ import annotations

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import InterimTranscriptionFrame, TranscriptionFrame
from pipecat.services.stt_service import STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt

MODEL_NAME = "nemotron-speech-streaming"
SAMPLE_RATE = 16_000  # what the model (and the server protocol) takes


class TranscriptFramesMixin(STTService):
    """Interims only when the text changes; one `TranscriptionFrame` per finalize.

    The services call `request_finalize()` when they ask for a final, and `_push_final` calls
    `confirm_finalize()`, so the final goes out with `finalized=True` and ends the user turn
    at once.
    """

    _last_interim: str = ""
    _resampler = None

    async def _to_model_rate(self, audio: bytes) -> bytes:
        """Pipelines may run at any input rate; the model takes 16 kHz."""
        if self.sample_rate == SAMPLE_RATE:
            return audio
        if self._resampler is None:
            self._resampler = create_stream_resampler()
        return await self._resampler.resample(audio, self.sample_rate, SAMPLE_RATE)

    async def _push_interim(self, text: str, result: object) -> None:
        # Also drops repeats the ASR cannot know about (a replay after a reconnect).
        if not text or text == self._last_interim:
            return
        self._last_interim = text
        await self.push_frame(
            InterimTranscriptionFrame(
                text, self._user_id, time_now_iso8601(), self._settings.language, result
            )
        )

    async def _push_final(self, text: str, result: object) -> None:
        self._last_interim = ""
        self.confirm_finalize()
        if not text:
            # Nothing was said (a VAD false start): close the TTFB measurement now.
            await self.stop_ttfb_metrics()
            await self._cancel_ttfb_timeout()
            return
        # Usage first, so tracing can attach it to the span the transcript closes.
        await self.emit_stt_usage_metrics()
        await self.push_frame(
            TranscriptionFrame(
                text, self._user_id, time_now_iso8601(), self._settings.language, result
            )
        )
        await self._trace_transcription(text, True, self._settings.language)

    @traced_stt
    async def _trace_transcription(
        self, transcript: str, is_final: bool, language: Language | None = None
    ):
        """Record a final transcript for tracing."""
