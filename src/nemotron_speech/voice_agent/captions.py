"""Live captions: speech in, text out, no LLM and no TTS.

    transport.input() -> Silero VAD -> STT -> CaptionPrinter -> transport.output()

The VAD runs in a `VADProcessor` ahead of the STT (there is no user aggregator to hold it), so
the STT still finalizes each utterance when the speaker pauses. Transcripts reach a browser as
RTVI `user-input` messages (the worker's RTVI observer sends them), and the printer writes them
to a stream: finals as lines, interims rewritten in place when the stream is a terminal.
"""

from __future__ import annotations

import sys
from typing import TextIO

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, InterimTranscriptionFrame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import BaseTransport

from nemotron_speech.voice_agent.builder import VAD_STOP_SECS


class CaptionPrinter(FrameProcessor):
    """Writes transcripts to `stream` and keeps the finals in `lines`; passes every frame on."""

    def __init__(self, stream: TextIO | None = None, **kwargs):
        super().__init__(**kwargs)
        self._stream = stream or sys.stdout
        self._live = self._stream.isatty()
        self.lines: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.lines.append(frame.text)
            self._write(f"{frame.text}\n")
        elif isinstance(frame, InterimTranscriptionFrame) and self._live:
            self._write(f"\r\033[2K{frame.text}")
        await self.push_frame(frame, direction)

    def _write(self, text: str) -> None:
        if self._live:
            text = "\r\033[2K" + text
        self._stream.write(text)
        self._stream.flush()


def build_captions(
    transport: BaseTransport,
    stt: FrameProcessor,
    *,
    printer: CaptionPrinter | None = None,
    **worker_kwargs,
) -> tuple[PipelineWorker, CaptionPrinter]:
    """The captioning pipeline's worker and its printer (pass one to write elsewhere)."""
    printer = printer or CaptionPrinter()
    vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=VAD_STOP_SECS)))
    pipeline = Pipeline([transport.input(), vad, stt, printer, transport.output()])
    worker = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True), **worker_kwargs)
    return worker, printer
