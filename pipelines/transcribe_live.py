"""Live captions: speech to text with the streaming ASR, no LLM and no TTS.

    python pipelines/transcribe_live.py -t webrtc        # http://localhost:7860/voice/ + stdout
    python pipelines/transcribe_live.py --wav talk.wav   # a recording, played in real time

The same STT service and VAD as the voice bot, in a three-stage pipeline
(`nemotron_speech.voice_agent.captions`): finals print to stdout (interims too, on a terminal) and
reach the browser as RTVI `user-input` messages. `--wav` plays a file through the pipeline at
real-time pace, as a microphone would, with no browser and no runner.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import offline_page  # noqa: F401  (adds /voice/ to the runner's app)
from pipecat.frames.frames import EndFrame
from pipecat.runner.run import main
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.workers.runner import WorkerRunner

from nemotron_speech.voice_agent.bot import transport_params
from nemotron_speech.voice_agent.captions import build_captions
from nemotron_speech.voice_agent.config import BotConfig, add_arguments, make_stt
from nemotron_speech.voice_agent.sessions import run_session
from nemotron_speech.voice_agent.wav_transport import WavTransport, load_pcm16

FINAL_WAIT_SECS = 2.0  # after the file ends: VAD stop + finalize, with room to spare


async def bot(runner_args: RunnerArguments):
    """Called by pipecat's runner once per session."""
    config = BotConfig.from_args(runner_args.cli_args or argparse.Namespace())
    transport = await create_transport(runner_args, transport_params(audio_out=False))
    worker, _ = build_captions(transport, make_stt(config))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport, _client):
        await worker.cancel()

    await run_session(worker, handle_sigint=runner_args.handle_sigint)  # Ctrl-C ends it at once


async def transcribe_file(path: str, config: BotConfig) -> list[str]:
    """Caption a recording through the live pipeline; returns the final transcripts."""
    transport = WavTransport(load_pcm16(path), lead_secs=0.3)
    worker, printer = build_captions(transport, make_stt(config), idle_timeout_secs=None)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    task = asyncio.create_task(runner.run())
    while transport.input().speech_ended_at is None:
        await asyncio.sleep(0.1)
    await asyncio.sleep(FINAL_WAIT_SECS)
    await worker.queue_frame(EndFrame())
    await task
    return printer.lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Nemotron live captions")
    p.add_argument("--wav", help="caption this recording instead of serving a browser")
    return add_arguments(p, llm=False, tts=False)


if __name__ == "__main__":
    known, _ = parser().parse_known_args()
    if known.wav:
        lines = asyncio.run(transcribe_file(known.wav, BotConfig.from_args(known)))
        sys.exit(0 if lines else 1)
    main(parser())
