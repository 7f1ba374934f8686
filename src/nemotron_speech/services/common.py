"""What the two Nemotron STT services share: 16 kHz input and how transcripts become frames."""

from __future__ import annotations

import inspect

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.stt_service import STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt

from nemotron_speech.protocol import SAMPLE_RATE

MODEL_NAME = "nemotron-speech-streaming"
RESET_AFTER_SECS = 1.0  # pauses up to this long keep the ASR context (see `_reset_due`)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def reject_unknown_kwargs(service: type, kwargs: dict) -> None:
    """Raise `TypeError` for keyword arguments that no `__init__` along `service`'s MRO names.

    pipecat's base classes accept and drop any keyword, so a misspelt or misplaced argument
    (`NemotronSTTService(urll=...)`) would otherwise be ignored without a word.
    """
    known = {
        parameter.name
        for cls in service.__mro__
        if "__init__" in cls.__dict__
        for parameter in inspect.signature(cls.__dict__["__init__"]).parameters.values()
        if parameter.kind in _NAMED
    }
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(
            f"{service.__name__} got unexpected keyword argument(s): {', '.join(unknown)}"
        )


class TranscriptFramesMixin(STTService):
    """Interims only when the text changes; one `TranscriptionFrame` per finalize.

    The services call `request_finalize()` when they ask for a final, and `_push_final` calls
    `confirm_finalize()`, so the final goes out with `finalized=True` and ends the user turn
    at once.
    """

    _last_interim: str = ""
    _resampler = None
    _reset_after_secs: float | None = RESET_AFTER_SECS
    _quiet_secs: float | None = None  # audio since the VAD stop; None: speaking, or reset done

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Count the audio after a VAD stop; stop counting when the user speaks again."""
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._quiet_secs = None
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._quiet_secs = 0.0

    def _reset_due(self, audio: bytes) -> bool:
        """True once the user has been quiet for `reset_after_secs` of audio since the VAD stop.

        A finalize keeps the stream's context, which is right for a pause inside a turn; a
        longer silence ends the utterance, and the next one starts from clean state. (A
        transducer's prediction network changes only when it emits a token, so no amount of
        silence clears it: the generated model recognises nothing after a finished sentence
        in one stream, even 6 s later.) The reset happens in silence, after the final is out,
        so it costs no latency.
        """
        if self._quiet_secs is None or self._reset_after_secs is None:
            return False
        self._quiet_secs += len(audio) / (2 * SAMPLE_RATE)
        if self._quiet_secs < self._reset_after_secs:
            return False
        self._quiet_secs = None
        return True

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
