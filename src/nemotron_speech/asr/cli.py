"""`nemotron-speech transcribe`: one WAV file through the streaming engine (or offline).

The `asr` package imports its engine on first use, so this parser (and `nemotron-speech
--help`) loads without torch; NeMo is imported only once both paths are checked.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nemotron_speech.asr import AsrError, ModelNotFoundError
from nemotron_speech.asr.audio import load_audio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", help="WAV (or any libsndfile format) file; resampled to 16 kHz")
    parser.add_argument("--model", required=True, help="cache-aware streaming .nemo file")
    parser.add_argument(
        "--right-context",
        type=int,
        default=None,
        help="0/1/6/13 for the production model (default: the model's default)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="decode the whole utterance at once instead of streaming",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--no-resample",
        action="store_true",
        help="reject audio that is not 16 kHz instead of resampling it",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # NeMo's telemetry library logs three lines at import saying it is disabled; users need none
    logging.getLogger("nv_one_logger").setLevel(logging.ERROR)
    try:
        # both paths first: importing NeMo takes ~20 s, too long to wait for a typo
        samples = load_audio(args.audio, resample=not args.no_resample)
        if not Path(args.model).is_file():
            raise ModelNotFoundError(args.model)
        from nemotron_speech.asr import AsrEngine

        engine = AsrEngine.load(args.model, right_context=args.right_context, device=args.device)
        if args.offline:
            _, text = engine.transcribe_offline(samples)
        else:
            text = engine.transcribe(samples).text
    except AsrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0
