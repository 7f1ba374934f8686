"""The bundled voice bot end to end without a network transport.

Paced espeak speech -> real ASR server (generated model) -> real vLLM on CPU (fixture model)
-> espeak-ng TTS -> `WavTransport`'s recording output. The bot is `build_bot`, exactly what
`pipelines/voice_bot.py` runs, with its services pointed at the test servers.

The fixture LLM only answers its scripted prompts, and the test ASR model only knows the test
sentences, so the user's sentence is not one of the fixture's prompts: the model's reply to it is
arbitrary text (bounded by max_tokens), which is all a voice round trip needs. What the test pins
is what the LLM service sent to vLLM: the system prompt, and the user's sentence as transcribed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from pipecat.frames.frames import EndFrame
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from server_fixtures import pcm16

from nemotron_speech.services import NemotronLLMService
from nemotron_speech.testing.fixture_llm import SYSTEM_PROMPT, WEATHER, WEATHER_REPLY
from nemotron_speech.testing.sentences import SENTENCES
from nemotron_speech.voice_agent import build_voice_agent, contributions, user_text
from nemotron_speech.voice_agent.bot import build_bot
from nemotron_speech.voice_agent.config import EMPTY_REPLY, BotConfig, make_llm
from nemotron_speech.voice_agent.tools import get_weather
from nemotron_speech.voice_agent.wav_transport import WavTransport

pytestmark = pytest.mark.slow
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
SENTENCE = 11  # "can you hear me now good": no commas, so one VAD segment


def bot_config(vllm_server, **asr) -> BotConfig:
    """The tests' bot: the fixture LLM with short replies, espeak, no greeting; `asr` picks the
    ASR (a server URL or an in-process model)."""
    return BotConfig(
        **asr,
        llm_url=vllm_server.base_url,
        llm_model=vllm_server.model,
        max_tokens=24,
        tts="espeak",
        system_prompt=SYSTEM_PROMPT,
        greeting="",
    )


def record_requests(llm: NemotronLLMService) -> list[list[dict]]:
    """Messages of every chat request the service sends to vLLM, system prompt included."""
    sent: list[list[dict]] = []
    build = llm.build_chat_completion_params

    def recording(params_from_context):
        params = build(params_from_context)
        sent.append([dict(m) for m in params["messages"]])
        return params

    llm.build_chat_completion_params = recording
    return sent


def last_voiced_secs(pcm: bytes, threshold: int = 500) -> float:
    """Offset of the last sample louder than `threshold` (the WAV ends in a little silence)."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16).astype(np.int32))
    return float(np.nonzero(samples > threshold)[0][-1] + 1) / 16000


async def test_voice_round_trip(asr_server, vllm_server, speech_wavs):
    config = bot_config(vllm_server, asr_url=asr_server.url)
    speech = pcm16(speech_wavs[SENTENCE])
    transport = WavTransport(speech, lead_secs=1.0)
    llm = make_llm(config)
    # greedy: a sampled reply of the random fixture LLM can be a malformed tool call, and then
    # no answer is spoken (a fresh-clone CI run timed out so); what this test checks is the path
    llm.settings.temperature = 0.0
    sent = record_requests(llm)
    agent = build_bot(transport, config, llm=llm)
    output = transport.output()

    runner = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(90):
            while not agent.latency.breakdowns:
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # let a little more of the answer play
        await agent.worker.queue_frame(EndFrame())
        await asyncio.wait_for(runner, 30)
    finally:
        runner.cancel()

    assert sent[0] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": SENTENCES[SENTENCE]},
    ]
    assert output.first_audio_at is not None
    assert any(output.audio), "the bot's audio is silent"

    breakdown = agent.latency.breakdowns[0]
    parts = contributions(breakdown)
    print("V2V breakdown:\n" + "\n".join(breakdown.turn_contribution_lines()))
    for key in ("endpointing_wait", "transcription", "llm_inference", "speech_synthesis"):
        assert key in parts, f"{key} missing from {parts}"
    # The observer's clock starts where the VAD places speech end; check it against the last
    # voiced sample of the recording, as played, and the first sample the bot wrote.
    # The margin covers how late a loaded machine's VAD sees the speech end, not a latency goal
    # (benchmarks/voice_to_voice.py measures that): an observer counting from elsewhere, such
    # as the start of speech or the connection, is off by seconds.
    speech_end = transport.input().speech_started_at + last_voiced_secs(speech)
    assert breakdown.total_secs == pytest.approx(output.first_audio_at - speech_end, abs=1.0)


def run_pipeline(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PIPELINES / script), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_transcribe_live_wav(asr_server, speech_wavs):
    """The captions pipeline prints the sentence a recording says, played in real time."""
    result = run_pipeline(
        "transcribe_live.py", "--wav", str(speech_wavs[2]), "--asr-url", asr_server.url
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [SENTENCES[2]]


def test_text_to_voice_calls_the_tool(vllm_server, tmp_path):
    """Typed question -> real vLLM calls get_weather -> its answer is spoken into a WAV."""
    out = tmp_path / "answer.wav"
    result = run_pipeline(
        "text_to_voice.py", WEATHER["content"], "--out", str(out), "--tts", "espeak",
        "--llm-url", vllm_server.base_url, "--llm-model", vllm_server.model,
        "--system-prompt", SYSTEM_PROMPT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == WEATHER_REPLY
    assert "get_weather" in result.stderr  # the handler ran (pipecat logs the call)
    with wave.open(str(out)) as wav:
        assert wav.getnframes() / wav.getframerate() > 1.0


async def test_a_reply_without_words_is_answered_with_a_fallback(vllm_server):
    """The bot's LLM (`make_llm`) on the weather question with room for 4 tokens: the tool call
    is cut off inside its markup, vLLM streams neither text nor a call, and the reply is
    `EMPTY_REPLY` (spoken like any reply) instead of silence. Text out: no TTS needed."""
    config = bot_config(vllm_server)
    config.max_tokens = 4
    agent = build_voice_agent(
        transport=WavTransport(b""),
        llm=make_llm(config),
        system_prompt=config.system_prompt,
        tools=[get_weather],
        user_params=LLMUserAggregatorParams(),  # no VAD: the turn is typed
        idle_timeout_secs=None,
    )
    runner = asyncio.create_task(agent.run())
    try:
        await agent.worker.queue_frames(user_text(WEATHER["content"]))
        async with asyncio.timeout(60):
            while not [m for m in agent.context.messages if m["role"] == "assistant"]:
                await asyncio.sleep(0.1)
        await agent.worker.queue_frame(EndFrame())
        await asyncio.wait_for(runner, 30)
    finally:
        runner.cancel()
    assert agent.context.messages[-1] == {"role": "assistant", "content": EMPTY_REPLY}


async def test_in_process_asr(asr_model_path, vllm_server, speech_wavs):
    """`--asr-model`: the same bot with the ASR engine inside its process, no server."""
    config = bot_config(
        vllm_server, asr_model=str(asr_model_path), asr_device="cpu", right_context=1
    )
    llm = make_llm(config)
    sent = record_requests(llm)
    transport = WavTransport(pcm16(speech_wavs[SENTENCE]), lead_secs=1.0)
    agent = build_bot(transport, config, llm=llm)
    assert type(agent.pipeline.processors[2]).__name__ == "NemotronLocalSTTService"
    runner = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(120):  # includes loading NeMo and the model
            while not agent.latency.breakdowns:
                await asyncio.sleep(0.1)
        await agent.worker.queue_frame(EndFrame())
        await asyncio.wait_for(runner, 30)
    finally:
        runner.cancel()
    assert sent[0][-1] == {"role": "user", "content": SENTENCES[SENTENCE]}
    assert transport.output().first_audio_at is not None
