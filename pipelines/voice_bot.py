"""The bundled voice bot: talk to Nemotron from a browser, Daily, or a phone line.

    python pipelines/voice_bot.py -t webrtc                    # browser UI at http://localhost:7860
                                                               # offline page: /voice/
    python pipelines/voice_bot.py -t webrtc --tts espeak       # any CPU box, no TTS weights
    python pipelines/voice_bot.py -t daily                     # needs DAILY_API_KEY
    python pipelines/voice_bot.py -t twilio -x NGROK_HOST      # telephony over a WebSocket

Speech goes to the ASR server (`--asr-url`, or `--asr-model` to run the model in this process),
the transcript to Nemotron on vLLM (`--llm-url`), the answer to a local TTS (`--tts kokoro`,
weights from `nemotron-speech download tts`, or `--tts espeak`). Every flag also reads an
environment variable, e.g. NEMOTRON_ASR_URL; `--help` lists them. The runner, transports and
browser client (pipecat-ai-prebuilt, at /client/) are pipecat's: `pipecat.runner.run.main`.
The prebuilt client loads Daily's device bundle from the internet even for WebRTC, so the runner
also serves `web/index.html` at /voice/: plain WebRTC and RTVI, nothing fetched from outside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastapi.responses import FileResponse
from pipecat.runner.run import app, main
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport

from nemotron_speech.pipeline.bot import build_bot, transport_params
from nemotron_speech.pipeline.config import BotConfig, add_arguments

OFFLINE_PAGE = Path(__file__).parent / "web" / "index.html"


@app.get("/voice/", include_in_schema=False)
async def offline_page() -> FileResponse:
    """The bundled offline browser client (same /api/offer signalling as /client/)."""
    return FileResponse(OFFLINE_PAGE)


async def bot(runner_args: RunnerArguments):
    """Called by pipecat's runner once per session (browser connection, call, Daily room)."""
    config = BotConfig.from_args(runner_args.cli_args or argparse.Namespace())
    transport = await create_transport(runner_args, transport_params())
    agent = build_bot(transport, config)
    await agent.run(handle_sigint=runner_args.handle_sigint)


if __name__ == "__main__":
    main(add_arguments(argparse.ArgumentParser(description="Nemotron voice bot")))
