"""`nemotron-speech serve-llm`: print and run the vLLM command, wait for /health, warm it up.

    nemotron-speech serve-llm --target spark              # real model from models/llm/...
    nemotron-speech serve-llm --target x86 --llm-variant fp8 --dry-run
    nemotron-speech serve-llm --target cpu-fixture --model FIXTURE_DIR --python VLLM_VENV/bin/python

The command is printed before it runs so users can copy it into their own launchers. After
`/health` answers, one short chat completion warms the server up (so the first user turn does
not pay for lazy start-up work) before "vLLM ready" is printed; the server then keeps running in
the foreground until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from nemotron_speech.endpoints import LLM_PORT
from nemotron_speech.llm.recipe import TARGETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=sorted(TARGETS), default="spark")
    parser.add_argument(
        "--model",
        default=None,
        help="model folder or HF repo id (default: the downloaded checkpoint under "
        "--models-dir; cpu-fixture needs one)",
    )
    parser.add_argument(
        "--llm-variant",
        choices=["bf16", "fp8", "nvfp4"],
        default=None,
        help="checkpoint variant (default: nvfp4 on spark, fp8 on x86)",
    )
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=LLM_PORT)
    parser.add_argument(
        "--python",
        default=os.environ.get("NEMOTRON_VLLM_PYTHON"),
        help="interpreter of the vLLM environment (cpu-fixture; default $NEMOTRON_VLLM_PYTHON)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1200.0,
        help="seconds to wait for /health (the real model loads for minutes)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    parser.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after `--`: extra vLLM flags, appended verbatim"
    )


def resolve_model(args: argparse.Namespace) -> str:
    """The model argument: explicit, else the download folder of the target's variant."""
    from nemotron_speech import download

    if args.model:
        return args.model
    variant = args.llm_variant or TARGETS[args.target].default_variant
    path = download.llm_path(download.models_dir(args.models_dir), variant)
    if not args.dry_run:
        download.require_weights(path, "llm", variant)
    return str(path)


def run(args: argparse.Namespace) -> int:
    from nemotron_speech.llm.launcher import ServerStartError, start_server
    from nemotron_speech.llm.recipe import build_command

    extra = tuple(a for a in args.extra if a != "--")
    if args.target == "cpu-fixture" and not args.python:
        print(
            "cpu-fixture needs the vLLM environment's python: --python or NEMOTRON_VLLM_PYTHON "
            "(create it with .ci/setup_vllm.sh)",
            file=sys.stderr,
        )
        return 2
    if args.target == "cpu-fixture" and not args.model:
        # the fixture is test code (nemotron_speech.testing): built by the tests, not by us
        print(
            "cpu-fixture serves the test fixture model: build it with `python -m "
            "nemotron_speech.testing.fixture_llm OUT_DIR` (in the vLLM environment) and pass "
            "--model OUT_DIR",
            file=sys.stderr,
        )
        return 2
    try:
        spec = build_command(
            args.target,
            resolve_model(args),
            port=args.port,
            host=args.host,
            python=args.python,
            extra_args=extra,
        )
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    print(spec.shell(), flush=True)
    if args.dry_run:
        return 0
    try:
        server = start_server(spec, timeout=args.timeout)
    except ServerStartError as e:
        print(e, file=sys.stderr)
        return 1
    print(
        f"vLLM ready after {server.started_in_s + server.warmup_s:.1f} s: {spec.base_url} "
        f"(model {spec.served_model_name}; healthy after {server.started_in_s:.1f} s, "
        f"warm-up completion {server.warmup_s:.2f} s)",
        flush=True,
    )
    # SIGTERM (docker stop, systemd) takes the same path as Ctrl-C; stopping inside the handler
    # would deadlock on the Popen lock that the interrupted wait() holds
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return server.process.wait()
    except KeyboardInterrupt:
        server.stop()
        return 0
