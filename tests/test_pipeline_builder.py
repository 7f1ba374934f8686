"""The voice-agent builder with stand-in STT and LLM (no servers): shape, turns, latency, TTS.

Real pieces: pipecat's aggregators, Silero VAD and smart-turn, the espeak-ng TTS service, and the
real-time `WavTransport` playing the test speech. The STT and LLM are stand-ins here; the
end-to-end test (`test_voice_bot_e2e.py`) runs the real ASR server and vLLM.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncGenerator

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMTextFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import STTService
from pipecat.utils.time import time_now_iso8601
from server_fixtures import pcm16

from nemotron_speech.testing.sentences import SENTENCES
from nemotron_speech.tts import EspeakNotFoundError, EspeakTTSService, create_tts
from nemotron_speech.tts.espeak import ESPEAK_SAMPLE_RATE, find_espeak
from nemotron_speech.voice_agent import build_voice_agent, contributions, user_text
from nemotron_speech.voice_agent.bot import build_bot, transport_params
from nemotron_speech.voice_agent.config import BotConfig
from nemotron_speech.voice_agent.tools import get_weather
from nemotron_speech.voice_agent.wav_transport import WavTransport

SENTENCE = 11  # "can you hear me now good": no commas, so one VAD segment
REPLY = "Yes, I can hear you."


class ScriptedSTT(STTService):
    """Says `text` (finalized) when the VAD hears the user stop, as a streaming STT does."""

    def __init__(self, text: str):
        super().__init__(
            sample_rate=16000,
            ttfs_p99_latency=0.3,
            settings=STTSettings(model="scripted", language=None),
        )
        self._text = text

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self.request_finalize()
            self.confirm_finalize()
            await self.push_frame(TranscriptionFrame(self._text, "", time_now_iso8601()))


class ScriptedLLM(OpenAILLMService):
    """Answers every request with `REPLY` and records the messages it was sent."""

    def __init__(self):
        super().__init__(api_key="unused", settings=OpenAILLMService.Settings(model="scripted"))
        self.requests: list[list[dict]] = []

    async def _process_context(self, context: LLMContext):
        self.requests.append(list(context.get_messages()))
        await self.start_ttfb_metrics()
        await asyncio.sleep(0.05)  # "first token"
        await self.stop_ttfb_metrics()
        await self.push_frame(LLMTextFrame(REPLY))


def test_pipeline_order_and_context():
    transport = WavTransport(b"")
    stt, llm = ScriptedSTT("hi"), ScriptedLLM()
    tts = EspeakTTSService()

    agent = build_voice_agent(
        transport=transport,
        stt=stt,
        llm=llm,
        tts=tts,
        system_prompt="Be brief.",
        tools=[get_weather],
    )
    assert agent.pipeline.processors[1:-1] == [
        transport.input(),
        stt,
        agent.user_aggregator,
        llm,
        tts,
        transport.output(),
        agent.assistant_aggregator,
    ]
    assert agent.context.get_messages() == []  # the system prompt lives on the LLM service
    assert llm._settings.system_instruction == "Be brief."
    assert [t.name for t in agent.context.tools.standard_tools] == ["get_weather"]
    assert agent.latency.observer in agent.worker._observer._observers

    text_only = build_voice_agent(transport=transport, llm=llm, system_prompt="x")
    assert stt not in text_only.pipeline.processors and tts not in text_only.pipeline.processors


async def run_until(agent, done, timeout: float) -> None:
    """Run the agent until `done()` holds, then end it cleanly."""
    runner = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.1)
        await agent.worker.queue_frame(EndFrame())
        await asyncio.wait_for(runner, 20)
    finally:
        runner.cancel()


async def test_voice_turn_reaches_llm_and_bot_speaks(speech_wavs):
    """Speech -> VAD + smart-turn -> LLM gets the transcript -> espeak audio comes out."""
    transport = WavTransport(pcm16(speech_wavs[SENTENCE]))
    llm = ScriptedLLM()
    agent = build_voice_agent(
        transport=transport,
        stt=ScriptedSTT(SENTENCES[SENTENCE]),
        llm=llm,
        tts=EspeakTTSService(),
        system_prompt="Be brief.",
    )
    await run_until(agent, lambda: agent.latency.breakdowns, timeout=60)

    assert llm.requests[0][-1] == {"role": "user", "content": SENTENCES[SENTENCE]}
    assert len(transport.output().audio) > 0.5 * 2 * 24000  # > 0.5 s of speech at 24 kHz
    parts = contributions(agent.latency.breakdowns[0])
    assert {"endpointing_wait", "transcription", "llm_inference", "speech_synthesis"} <= set(parts)


async def test_text_in_voice_out():
    """No STT, no VAD: a typed user turn is answered in speech, and the context keeps it."""
    transport = WavTransport(b"")
    llm = ScriptedLLM()
    agent = build_voice_agent(
        transport=transport, llm=llm, tts=EspeakTTSService(), system_prompt="Be brief."
    )
    output = transport.output()
    await agent.worker.queue_frames(user_text("hello there"))
    await run_until(agent, lambda: len(agent.context.get_messages()) == 2, timeout=30)
    assert llm.requests[0][-1] == {"role": "user", "content": "hello there"}
    assert agent.context.get_messages()[-1] == {"role": "assistant", "content": REPLY}
    assert output.first_audio_at is not None


async def test_say_speaks_without_llm():
    transport = WavTransport(b"")
    llm = ScriptedLLM()
    agent = build_voice_agent(transport=transport, llm=llm, tts=EspeakTTSService())
    await agent.say("Hello, I am listening.")
    await run_until(agent, lambda: transport.output().first_audio_at is not None, timeout=30)
    assert llm.requests == []


def test_kokoro_without_weights_names_the_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="nemotron-speech download tts"):
        create_tts("kokoro", models=tmp_path)


def test_espeak_missing_names_the_package():
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng"):
        EspeakTTSService(executable="espeak-ng-not-installed")
    with pytest.raises(ValueError, match="kokoro, espeak"):
        create_tts("nope")  # type: ignore[arg-type]


class FrameLog(BaseObserver):
    """Wall-clock times of the frames of interest, as they leave their processors."""

    def __init__(self, *types: type[Frame]):
        super().__init__()
        self._types = types
        self.seen: list[tuple[float, Frame]] = []

    async def on_push_frame(self, data: FramePushed):
        if isinstance(data.frame, self._types) and data.direction == FrameDirection.DOWNSTREAM:
            self.seen.append((time.time(), data.frame))

    def first(self, kind: type[Frame]) -> float:
        return next(t for t, f in self.seen if isinstance(f, kind))


def spoken_secs(text: str) -> float:
    """How long the bot's espeak-ng (its default voice and rate) speaks `text`."""
    settings = EspeakTTSService()._settings
    argv = [find_espeak(), "--stdout", "-v", settings.voice, "-s", str(settings.rate), "--", text]
    wav = subprocess.run(argv, capture_output=True, check=True).stdout
    return (len(wav) - 44) / 2 / ESPEAK_SAMPLE_RATE  # its header's length field is a placeholder


async def test_bot_greets_and_user_barges_in(speech_wavs):
    """The bundled bot greets on connect; speaking over the greeting cuts it short."""
    greeting = " ".join(["I am the Nemotron voice bot and I will keep talking for a while."] * 3)
    transport = WavTransport(pcm16(speech_wavs[SENTENCE]), lead_secs=1.5)
    llm = ScriptedLLM()
    frames = FrameLog(BotStartedSpeakingFrame, BotStoppedSpeakingFrame, InterruptionFrame)
    config = BotConfig(tts="espeak", greeting=greeting, system_prompt="Be brief.")
    agent = build_bot(
        transport, config, stt=ScriptedSTT(SENTENCES[SENTENCE]), llm=llm, observers=[frames]
    )
    await run_until(agent, lambda: agent.latency.breakdowns, timeout=60)

    speech_started = transport.input().speech_started_at
    interrupted = frames.first(InterruptionFrame)
    greeting_started = frames.first(BotStartedSpeakingFrame)
    greeting_ends = greeting_started + spoken_secs(greeting)  # the output plays in real time
    # Behaviour, not latency (how soon after the speech the bot stops is what a busy machine
    # stretches): the user spoke over the playing greeting, and it stopped seconds before its end.
    assert greeting_started < speech_started < interrupted < greeting_ends
    stopped = [t for t, f in frames.seen if isinstance(f, BotStoppedSpeakingFrame)]
    assert stopped and stopped[0] < greeting_ends - 3  # the greeting did not play out
    # pipecat keeps an interrupted TTSSpeakFrame's text out of the context: only the turn remains
    assert llm.requests[0] == [{"role": "user", "content": SENTENCES[SENTENCE]}]


def test_transport_params_cover_the_runner_transports():
    params = transport_params()
    assert {"webrtc", "daily", "websocket", "twilio", "telnyx", "plivo", "exotel"} <= set(params)
    assert params["webrtc"]().audio_in_enabled
    websocket = params["websocket"]()
    assert type(websocket.serializer).__name__ == "ProtobufFrameSerializer"
    assert params["twilio"]().serializer is None  # the runner picks it from the call's handshake
    assert not transport_params(audio_out=False)["webrtc"]().audio_out_enabled
    try:  # the Daily SDK is an optional extra: either it builds, or the error names the extra
        assert params["daily"]().audio_in_enabled
    except ImportError as exc:
        assert "pipecat-ai[daily]" in str(exc)


def test_kokoro_is_built_from_the_models_folder(tmp_path, monkeypatch):
    """With the weights in place, pipecat's Kokoro service gets their paths (never downloads)."""
    from pipecat.services.kokoro import tts as kokoro  # the kokoro extra: setup.sh installs it

    (tmp_path / "tts").mkdir()
    for name in ("kokoro-v1.0.onnx", "voices-v1.0.bin"):
        (tmp_path / "tts" / name).write_bytes(b"")
    built = {}

    class FakeKokoro:
        Settings = kokoro.KokoroTTSService.Settings

        def __init__(self, **kwargs):
            built.update(kwargs)

    monkeypatch.setattr(kokoro, "KokoroTTSService", FakeKokoro)
    create_tts("kokoro", models=tmp_path, voice="am_adam", sample_rate=24000)
    assert built["model_path"] == str(tmp_path / "tts" / "kokoro-v1.0.onnx")
    assert built["voices_path"] == str(tmp_path / "tts" / "voices-v1.0.bin")
    assert built["settings"].voice == "am_adam" and built["sample_rate"] == 24000
