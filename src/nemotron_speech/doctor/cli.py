"""`nemotron-speech doctor [--only GROUPS] [--skip GROUPS] [...]`: print the report, exit 1 on a
failure.

    nemotron-speech doctor                            # on the Spark, before or after `up`
    nemotron-speech doctor --skip gpu,models          # a laptop bot talking to remote servers
    nemotron-speech doctor --only asr,llm --asr-url ws://spark:8080 --llm-url http://spark:8000/v1

Service flags read the bot's environment variables (NEMOTRON_ASR_URL, NEMOTRON_LLM_URL...), so in
the bot's container the doctor checks what the bot will use.
"""

from __future__ import annotations

import argparse

from nemotron_speech.doctor import GROUPS, render, run_checks
from nemotron_speech.doctor.core import DEFAULT_BOT_PORT, Options
from nemotron_speech.doctor.core import env as nemotron_env
from nemotron_speech.endpoints import ASR_URL, LLM_MODEL, LLM_URL
from nemotron_speech.llm.recipe import TARGETS


def _groups(text: str) -> set[str]:
    groups = {g.strip() for g in text.split(",") if g.strip()}
    unknown = groups - GROUPS.keys()
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown group(s) {sorted(unknown)}; use {list(GROUPS)}")
    return groups


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_argument_group("which checks (comma-separated groups)")
    which.add_argument("--only", type=_groups, default=set(GROUPS), help=", ".join(GROUPS))
    which.add_argument("--skip", type=_groups, default=set(), help="groups to leave out")
    machine = parser.add_argument_group("this machine")
    machine.add_argument(
        "--target",
        choices=[t for t in TARGETS if t != "cpu-fixture"],
        default="spark",
        help="vLLM target: memory share, default checkpoint",
    )
    machine.add_argument(
        "--llm-variant",
        choices=["nvfp4", "fp8", "bf16"],
        default=None,
        help="LLM checkpoint (default: the target's)",
    )
    machine.add_argument(
        "--models-dir",
        default=nemotron_env("models_dir"),
        help="where `nemotron-speech download` put the weights",
    )
    machine.add_argument(
        "--port", dest="bot_port", type=int, default=DEFAULT_BOT_PORT, help="the voice bot's port"
    )
    services = parser.add_argument_group("services (env: NEMOTRON_<NAME>, as the bot)")
    services.add_argument("--asr-url", default=nemotron_env("asr_url", ASR_URL))
    services.add_argument(
        "--asr-model",
        default=nemotron_env("asr_model"),
        help="a .nemo the bot runs in-process instead of the ASR server",
    )
    services.add_argument("--llm-url", default=nemotron_env("llm_url", LLM_URL))
    services.add_argument("--llm-model", default=nemotron_env("llm_model", LLM_MODEL))
    services.add_argument("--llm-api-key", default=nemotron_env("llm_api_key"))
    services.add_argument(
        "--tts", choices=["kokoro", "espeak", "magpie"], default=nemotron_env("tts", "kokoro")
    )
    services.add_argument("--tts-voice", default=nemotron_env("tts_voice"))
    services.add_argument("--magpie-model", default=nemotron_env("magpie_model"))
    services.add_argument("--magpie-codec", default=nemotron_env("magpie_codec"))
    services.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each answer"
    )


def run(args: argparse.Namespace) -> int:
    checks = run_checks(Options.from_settings(args), args.only - args.skip)
    print(render(checks))
    return 1 if any(c.failed for c in checks) else 0
