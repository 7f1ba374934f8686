"""The bundled voice bot: talk to Nemotron from a browser, Daily, or a phone line.

    python pipelines/voice_bot.py -t webrtc                    # http://localhost:7860/voice/
    python pipelines/voice_bot.py -t webrtc --tts espeak       # any CPU box, no TTS weights
    python pipelines/voice_bot.py -t daily                     # needs DAILY_API_KEY
    python pipelines/voice_bot.py -t twilio -x NGROK_HOST      # telephony over a WebSocket

Speech goes to the ASR server (`--asr-url`, or `--asr-model` to run the model in this process),
the transcript to Nemotron on vLLM (`--llm-url`), the answer to a local TTS (`--tts kokoro`,
weights from `nemotron-speech download tts`; `--tts magpie`, NVIDIA Magpie on the GPU, weights
from `nemotron-speech download magpie`; or `--tts espeak`). Every flag also reads an
environment variable, e.g. NEMOTRON_ASR_URL; `--help` lists them. The runner and transports are
pipecat's (`pipecat.runner.run.main`); the browser clients are pipecat's prebuilt UI at /client/
(needs internet access) and our offline page at /voice/.
"""

from __future__ import annotations

import argparse
import sys

import offline_page  # noqa: F401  (adds /voice/ to the runner's app)
from pipecat.runner.run import main
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport

from nemotron_speech.voice_agent.access import BotArgumentParser
from nemotron_speech.voice_agent.bot import build_bot, transport_params
from nemotron_speech.voice_agent.config import BotConfig, add_arguments, make_tts
from nemotron_speech.voice_agent.preflight import preflight
from nemotron_speech.voice_agent.sessions import run_session


async def bot(runner_args: RunnerArguments):
    """Called by pipecat's runner once per session (browser connection, call, Daily room)."""
    config = BotConfig.from_args(runner_args.cli_args or argparse.Namespace())
    transport = await create_transport(runner_args, transport_params())
    agent = build_bot(transport, config)
    # Ctrl-C ends the session at once instead of waiting for the browser to leave
    await run_session(agent.worker, handle_sigint=runner_args.handle_sigint)


if __name__ == "__main__":
    parser = add_arguments(BotArgumentParser(description="Nemotron voice bot"))
    preflight(parser)  # exits with the report when the TTS, ASR or LLM cannot serve a session
    args, _ = parser.parse_known_args()
    if args.tts == "magpie" and not {"-h", "--help"} & set(sys.argv):
        # load Magpie before serving: a session cannot wait for it (pipecat stops a session whose
        # TTS gives no audio for seconds), and every session shares this one
        make_tts(BotConfig.from_args(args))
    main(parser)
