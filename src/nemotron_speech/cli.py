"""The `nemotron-speech` command: one subcommand per module, each registering its own parser.

Subcommand modules are imported only when their command runs, so `nemotron-speech --help` stays
fast and works without torch or NeMo installed. A `.env` file in the working directory (or above)
sets environment variables first, as pipecat's runner does.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nemotron_speech import __version__
from nemotron_speech.env import load_env

# command name -> module exposing `add_arguments(parser)` and `run(args) -> int`
COMMANDS: dict[str, tuple[str, str]] = {
    "transcribe": ("nemotron_speech.asr.cli", "transcribe a WAV file with a streaming model"),
    "download": ("nemotron_speech.download", "download ASR / LLM / TTS weights into models/"),
    "serve-llm": ("nemotron_speech.llm.cli", "run vLLM with the Nemotron-3-Nano recipe"),
    "serve-asr": ("nemotron_speech.server.__main__", "run the streaming ASR WebSocket server"),
    "doctor": ("nemotron_speech.doctor.cli", "check GPU, weights, servers and ports, with fixes"),
    "eval": ("nemotron_speech.evaluation.cli", "WER of a model or ASR server on your own data"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nemotron-speech")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module)
        importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    load_env()
    args = build_parser().parse_args(argv)
    return importlib.import_module(args.module).run(args)


if __name__ == "__main__":
    sys.exit(main())
