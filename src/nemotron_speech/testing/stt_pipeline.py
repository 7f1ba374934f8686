"""Drive an STT service as a voice pipeline does: espeak speech paced in real time through the
real Silero VAD (from the pipecat wheel), under `pipecat.tests.utils.run_test`. Used by the
service tests and by `benchmarks/services.py`; needs pipecat (the `bot` extra).

`frames_to_send` may be any iterable, so the frames are generated lazily: pacing sleeps are
computed against the clock as the frames go out, and `wait_for` holds the pipeline open until a
condition holds instead of sleeping for a fixed worst case.
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    MetricsFrame,
    TranscriptionFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from nemotron_speech.protocol import SAMPLE_RATE
from nemotron_speech.voice_agent.builder import VAD_STOP_SECS

FRAME_BYTES = 640  # 20 ms, what SmallWebRTC delivers


def pcm16(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        return wav.readframes(wav.getnframes())


def silence(seconds: float) -> bytes:
    return bytes(2 * int(seconds * SAMPLE_RATE))


def conversation(wavs: Iterable[Path], gap: float = 1.2) -> tuple[bytes, list[tuple[float, float]]]:
    """Half a second of silence, then each utterance followed by `gap` seconds of silence.

    Returns the audio and the (start, end) seconds of each utterance in it.
    """
    audio, spans = silence(0.5), []
    for path in wavs:
        speech = pcm16(path)
        start = len(audio) / (2 * SAMPLE_RATE)
        spans.append((start, start + len(speech) / (2 * SAMPLE_RATE)))
        audio += speech + silence(gap)
    return audio, spans


def paced(audio: bytes, on_frame: Callable[[float], None] | None = None) -> Iterator[Frame]:
    """20 ms audio frames at real time; `on_frame(seconds_sent)` runs before each frame."""
    start = time.monotonic()
    for offset in range(0, len(audio), FRAME_BYTES):
        if on_frame:
            on_frame(offset / (2 * SAMPLE_RATE))
        delay = start + offset / (2 * SAMPLE_RATE) - time.monotonic()
        if delay > 0:
            yield SleepFrame(sleep=delay)
        yield InputAudioRawFrame(audio[offset : offset + FRAME_BYTES], SAMPLE_RATE, 1)


def unpaced(audio: bytes) -> Iterator[Frame]:
    """20 ms audio frames as fast as the pipeline takes them: the VAD and the services work on
    the audio itself, so behaviour checks need not wait for the clock."""
    for offset in range(0, len(audio), FRAME_BYTES):
        yield InputAudioRawFrame(audio[offset : offset + FRAME_BYTES], SAMPLE_RATE, 1)


def wait_for(condition: Callable[[], bool], timeout: float) -> Iterator[Frame]:
    """Keep the pipeline running until `condition()` holds (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        yield SleepFrame(sleep=0.05)


class FinalsTap(FrameProcessor):
    """Keeps the final transcripts that pass and when they passed (`time.time()`)."""

    def __init__(self):
        super().__init__()
        self.finals: list[TranscriptionFrame] = []
        self.times: list[float] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.times.append(time.time())
            self.finals.append(frame)
        await self.push_frame(frame, direction)


async def run_stt(
    stt: FrameProcessor,
    frames: Callable[[FinalsTap], Iterable[Frame]],
    tap: FinalsTap | None = None,
    **kwargs,
):
    """Run `[Silero VAD, stt, tap]`; `frames(tap)` gives what to send. Returns (down, up)."""
    tap = tap or FinalsTap()
    vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=VAD_STOP_SECS)))
    return await run_test(
        Pipeline([vad, stt, tap]),
        frames_to_send=frames(tap),
        pipeline_params=PipelineParams(
            enable_metrics=True, enable_usage_metrics=True, send_initial_empty_metrics=False
        ),
        **kwargs,
    )


def of_type(frames: Iterable[Frame], kind: type) -> list:
    return [frame for frame in frames if isinstance(frame, kind)]


def metrics(frames: Iterable[Frame], kind: type) -> list:
    return [d for f in of_type(frames, MetricsFrame) for d in f.data if isinstance(d, kind)]


def check_turns(down: list[Frame], sentences: list[str], spans: list[tuple[float, float]]) -> None:
    """One finalized transcript per turn with the expected text; interims only when the text
    changes, none before the first word, and a TTFB per turn.

    Where an interim sits among the passed-through audio frames says how much audio the service
    had received when it came out. How far it may trail its words is the server's latency, a
    timing goal for benchmarks/services.py, not checked here: a loaded machine stretches it.
    """
    finals = of_type(down, TranscriptionFrame)
    assert [frame.text for frame in finals] == sentences
    assert all(frame.finalized for frame in finals)
    received, previous = 0.0, None
    for frame in down:
        if isinstance(frame, InputAudioRawFrame):
            received += len(frame.audio) / (2 * SAMPLE_RATE)
        elif isinstance(frame, TranscriptionFrame):
            previous = None
        elif isinstance(frame, InterimTranscriptionFrame):
            assert received > spans[0][0], f"interim {frame.text!r} before any speech"
            assert frame.text and frame.text != previous, "empty or repeated interim"
            previous = frame.text
    ttfb = metrics(down, TTFBMetricsData)
    assert len(ttfb) == len(sentences)
    assert all(data.value > 0 for data in ttfb), ttfb
