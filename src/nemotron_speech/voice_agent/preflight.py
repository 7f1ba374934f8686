"""The bot's start-up checks: refuse to serve instead of accepting sessions it cannot serve.

Without them a bot whose ASR or LLM server is down, or whose Kokoro weights are missing, starts,
serves its page, and drops every session when a browser connects. `preflight` runs the doctor's
tts, asr and llm checks (`nemotron-speech doctor --only tts,asr,llm` with the bot's settings)
before pipecat's runner starts; on a failure it prints the report and exits with status 1.
--skip-preflight (or NEMOTRON_SKIP_PREFLIGHT=1) starts the bot anyway, e.g. when the servers
come up after it.
"""

from __future__ import annotations

import argparse
import os
import sys

from nemotron_speech.doctor import Options, render, run_checks
from nemotron_speech.voice_agent.config import BotConfig

GROUPS = ("tts", "asr", "llm")
SKIP_ENV = "NEMOTRON_SKIP_PREFLIGHT"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--skip-preflight",
        action="store_true",
        default=os.environ.get(SKIP_ENV, "") not in ("", "0"),
        help=f"start without checking the TTS, ASR and LLM first (env {SKIP_ENV}=1)",
    )
    return parser


def preflight(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Add --skip-preflight to `parser`, then check what the parsed flags point at.

    Call it before pipecat's `main(parser)`: only this script's own flags are parsed here (the
    runner's are added by `main`, so they are left alone); `--help` is left to `main` too.
    Exits with status 1 and the report when a check fails.
    """
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        return
    args, _ = parser.parse_known_args(argv)
    if args.skip_preflight:
        return
    checks = run_checks(Options.from_settings(BotConfig.from_args(args)), GROUPS)
    print(render(checks), file=sys.stderr, flush=True)
    if any(check.failed for check in checks):
        print(
            "The bot would accept sessions it cannot serve: fix the lines marked fail, "
            f"or start it anyway with --skip-preflight ({SKIP_ENV}=1).",
            file=sys.stderr,
        )
        raise SystemExit(1)
