"""`WavTransport`: a Pipecat transport that speaks a recording and records the bot's answer.

It stands in for a browser or a phone where a pipeline runs on recordings (captions of a file,
text answered into a WAV) and in tests and benchmarks: the input plays PCM16
audio in real time, 20 ms per frame like a WebRTC microphone, and keeps sending silence after it
(a live mic never goes quiet by stopping); the output takes audio at real-time pace like a sound
card, so `BotStartedSpeakingFrame` / `BotStoppedSpeakingFrame` and interruptions behave as they
do with a real client, and keeps every byte the bot said.
"""

from __future__ import annotations

import asyncio
import os
import time
import wave
from collections.abc import Awaitable, Callable

import numpy as np
import soundfile
import soxr
from pipecat.frames.frames import (
    CancelFrame,
    ClientConnectedFrame,
    EndFrame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from nemotron_speech.protocol import SAMPLE_RATE

FRAME_SECS = 0.02  # what SmallWebRTC delivers


def load_pcm16(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Any audio file soundfile reads, as mono PCM16 at `sample_rate`."""
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate)
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()


class WavInputTransport(BaseInputTransport):
    """Plays `audio` (PCM16 mono) after `lead_secs` of silence, then silence until stopped."""

    def __init__(
        self,
        audio: bytes,
        params: TransportParams,
        *,
        lead_secs: float,
        on_connected: Callable[[], Awaitable[None]],
        **kwargs,
    ):
        super().__init__(params, **kwargs)
        self._audio = audio
        self._lead_secs = lead_secs
        self._on_connected = on_connected
        self._feed_task: asyncio.Task | None = None
        self.speech_started_at: float | None = None
        self.speech_ended_at: float | None = None  # wall clock (time.time()) of the last sample

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)
        # what a WebRTC client's arrival looks like to the pipeline and to the bot's handlers
        await self.push_frame(ClientConnectedFrame())
        await self._on_connected()
        self._feed_task = self.create_task(self._feed())

    async def stop(self, frame: EndFrame):
        await self._cancel_feed()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame):
        await self._cancel_feed()
        await super().cancel(frame)

    async def _cancel_feed(self):
        if self._feed_task:
            await self.cancel_task(self._feed_task)
            self._feed_task = None

    async def _feed(self):
        """Push 20 ms frames on an absolute schedule, so the pace never drifts."""
        step = int(self.sample_rate * FRAME_SECS) * 2
        silence = b"\x00" * step
        lead = [silence] * round(self._lead_secs / FRAME_SECS)
        speech = [self._audio[i : i + step] for i in range(0, len(self._audio), step)]
        start = time.monotonic()
        index = 0
        while True:
            if index == len(lead):
                self.speech_started_at = time.time()
            chunk = (
                speech[index - len(lead)]
                if len(lead) <= index < len(lead) + len(speech)
                else silence
            )
            if index == len(lead) + len(speech):
                self.speech_ended_at = time.time()
            await self.push_audio_frame(
                InputAudioRawFrame(audio=chunk, sample_rate=self.sample_rate, num_channels=1)
            )
            index += 1
            await asyncio.sleep(max(0.0, start + index * FRAME_SECS - time.monotonic()))


class RecordingOutputTransport(BaseOutputTransport):
    """Consumes audio at real-time pace and keeps it (`audio`, at `sample_rate`)."""

    def __init__(self, params: TransportParams, **kwargs):
        super().__init__(params, **kwargs)
        self.audio = bytearray()
        self.first_audio_at: float | None = None  # wall clock of the first non-silent chunk
        self.last_audio_at: float | None = None  # time.monotonic() when the last chunk was played
        self._next_write = 0.0

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)

    def save_wav(self, path: str | os.PathLike) -> None:
        """Write what the bot said to a mono PCM16 WAV file."""
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(bytes(self.audio))

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        now = time.monotonic()
        if self.first_audio_at is None and any(frame.audio):
            self.first_audio_at = time.time()
        self.audio += frame.audio
        self._next_write = max(self._next_write, now) + len(frame.audio) / (2 * frame.sample_rate)
        await asyncio.sleep(max(0.0, self._next_write - now))
        self.last_audio_at = time.monotonic()
        return True


class WavTransport(BaseTransport):
    """Input plays a recording, output records the bot: a whole conversation with no network.

    Like a WebRTC transport it fires `on_client_connected` when the pipeline starts (so a bot's
    greeting plays) and `on_client_disconnected` never: end the worker yourself.
    """

    def __init__(
        self, audio: bytes, *, lead_secs: float = 0.5, params: TransportParams | None = None
    ):
        super().__init__(name="WavTransport")
        params = params or TransportParams(audio_in_enabled=True, audio_out_enabled=True)
        self._input = WavInputTransport(
            audio, params, lead_secs=lead_secs, on_connected=self._connected, name="WavInput"
        )
        self._output = RecordingOutputTransport(params, name="RecordingOutput")

        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    async def _connected(self) -> None:
        await self._call_event_handler("on_client_connected", "wav-client")

    def input(self) -> WavInputTransport:
        return self._input

    def output(self) -> RecordingOutputTransport:
        return self._output
