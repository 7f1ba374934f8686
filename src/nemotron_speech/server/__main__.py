"""Command line of the ASR server (`python -m nemotron_speech.server` or
`nemotron-speech serve-asr`); SIGTERM and SIGINT shut it down gracefully.

With no options it serves the model where `nemotron-speech download asr` puts it, at the seed's
right context (1, 160 ms chunks), on port 8080: the seed's `python -m nemotron_speech.server
--port 8080` works as it did."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from nemotron_speech.download import asr_path, models_dir, require_weights
from nemotron_speech.server.app import (
    SEED_RIGHT_CONTEXT,
    AsrServer,
    ServerConfig,
    serve_until_signalled,
)
from nemotron_speech.server.engine_process import skip_exit_collection

log = logging.getLogger("nemotron_speech.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerConfig(model=Path())
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="cache-aware streaming .nemo file (default: where `nemotron-speech download asr` "
        "puts it: $NEMOTRON_MODELS_DIR or ./models, then asr/)",
    )
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="0 picks a free port")
    parser.add_argument(
        "--right-context",
        type=int,
        default=None,
        help=f"attention right context in 80 ms frames (default: {SEED_RIGHT_CONTEXT} where the "
        "model supports it, else the model's own)",
    )
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default=defaults.precision,
        help="encoder precision",
    )
    parser.add_argument(
        "--no-cuda-graphs",
        dest="cuda_graphs",
        action="store_false",
        help="run the encoder eagerly on a GPU (CUDA graphs are the default there)",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=defaults.max_streams,
        help="connections beyond this are closed with 1013",
    )
    parser.add_argument(
        "--auth-token",
        default=os.environ.get("ASR_AUTH_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' (default: $ASR_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        help="close connections silent for this many seconds",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=defaults.max_message_bytes,
        help="larger frames close the connection with 1009",
    )
    parser.add_argument(
        "--max-buffered-seconds",
        type=float,
        default=defaults.max_buffered_seconds,
        help="unprocessed audio per stream at which the server stops reading it (backpressure)",
    )
    parser.add_argument(
        "--backpressure-timeout",
        type=float,
        default=defaults.backpressure_timeout,
        help="close a stream held at that bound for this many seconds with 1008",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=defaults.batch_wait_ms,
        help="when idle, wait this long after the first ready chunk for others to batch with it",
    )
    parser.add_argument(
        "--engine-process",
        action="store_true",
        help="run the engine in a process of its own, so WebSocket work never holds up a step "
        "(for hundreds of streams on a GPU; docs/server.md)",
    )
    parser.add_argument(
        "--engine-processes",
        type=_positive_int,
        default=1,
        help="with --workers: this many engine processes on --device, the server processes "
        "spread over them (implies --engine-process; one process's step is host-bound at "
        "~500 streams on an H200, docs/server.md)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="server processes sharing the port, each with its own engine on --device: one "
        "process's Python saturates at a few hundred streams (docs/server.md)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=defaults.shutdown_timeout,
        help="seconds to wait for each stream's final on shutdown",
    )
    parser.add_argument(
        "--port-file", type=Path, default=None, help="write the bound port here once listening"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    skip_exit_collection()
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.log_level != "DEBUG":  # one line per HTTP request and connection is noise
        logging.getLogger("websockets").setLevel(logging.WARNING)
    if args.model is None:
        args.model = asr_path(models_dir()).absolute()
    try:
        require_weights(args.model, "asr")
    except FileNotFoundError as exc:
        log.error("%s, or pass --model with a cache-aware streaming .nemo file", exc)
        return 2
    if args.engine_processes > args.workers:
        log.error(
            "--engine-processes %d needs at least as many --workers (each engine process "
            "serves the streams of the server processes assigned to it): pass --workers %d "
            "or more",
            args.engine_processes,
            args.engine_processes,
        )
        return 2
    args.engine_process = args.engine_process or args.engine_processes > 1
    options = {k: getattr(args, k) for k in ServerConfig.__dataclass_fields__}
    config = ServerConfig(**options)
    if args.workers > 1:
        from nemotron_speech.server.workers import run_workers

        return run_workers(config, args.workers, args.log_level)
    try:
        asyncio.run(serve_until_signalled(AsrServer(config)))
    except Exception as exc:  # a model that fails to load: say why and exit non-zero
        log.error("server failed: %s", exc)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nemotron_speech.server",
        description="Streaming ASR over WebSocket (protocol: docs/protocol.md).",
    )
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
