"""Text in, voice out: type to Nemotron, hear (and keep) the spoken answer.

    python pipelines/text_to_voice.py "What is the weather in Paris?" --out answer.wav
    echo "Tell me a joke" | python pipelines/text_to_voice.py --tts espeak --out joke.wav

The voice bot's pipeline without the STT (`build_voice_agent(stt=None)`): each line of text is a
user turn, the LLM answers (calling `get_weather` if it wants), the TTS speaks, and the audio is
written to a WAV file while the answer's text goes to stdout. The conversation context carries
over from line to line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from pipecat.frames.frames import EndFrame
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams

from nemotron_speech.voice_agent import VoiceAgent, build_voice_agent, user_text
from nemotron_speech.voice_agent.config import BotConfig, add_arguments, make_llm, make_tts
from nemotron_speech.voice_agent.tools import get_weather
from nemotron_speech.voice_agent.wav_transport import WavTransport

QUIET_SECS = 0.5  # the answer is over when the reply is in and no audio played for this long


async def answer(agent: VoiceAgent, transport: WavTransport, text: str) -> str:
    """Ask one question; return the spoken answer's text once its audio has played."""
    asked = len(agent.context.get_messages())
    await agent.worker.queue_frames(user_text(text))
    output = transport.output()
    while True:
        await asyncio.sleep(0.1)
        messages = agent.context.get_messages()
        last = messages[-1] if len(messages) > asked + 1 else {}
        replied = (
            last.get("role") == "assistant" and last.get("content") and not last.get("tool_calls")
        )
        quiet = output.last_audio_at and time.monotonic() - output.last_audio_at > QUIET_SECS
        if replied and quiet:
            return last["content"]


async def run(texts: list[str], config: BotConfig, out: str | None) -> list[str]:
    transport = WavTransport(b"")  # a silent microphone: every turn is typed
    agent = build_voice_agent(
        transport=transport,
        llm=make_llm(config),
        tts=make_tts(config),
        system_prompt=config.system_prompt,
        tools=[get_weather],
        user_params=LLMUserAggregatorParams(),  # no VAD: nobody speaks
        idle_timeout_secs=None,
    )
    task = asyncio.create_task(agent.run())
    replies = []
    for text in texts:
        replies.append(await answer(agent, transport, text))
        print(replies[-1], flush=True)
    await agent.worker.queue_frame(EndFrame())
    await task
    if out:
        transport.output().save_wav(out)
    return replies


def main() -> int:
    parser = argparse.ArgumentParser(description="Nemotron: text in, voice out")
    parser.add_argument("texts", nargs="*", help="user turns (default: lines of stdin)")
    parser.add_argument("--out", help="write the spoken answers to this WAV file")
    add_arguments(parser, stt=False)
    args = parser.parse_args()
    texts = args.texts or [line.strip() for line in sys.stdin if line.strip()]
    asyncio.run(run(texts, BotConfig.from_args(args), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
