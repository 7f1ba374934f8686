"""`nemotron-speech eval`: word error rate of a model or a running server on your own data.

Parses without torch; `--model` loads the engine (the `asr` extra), `--url` needs only the
`eval` extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from nemotron_speech.evaluation.metrics import NORMALIZERS

PRECISIONS = ("fp32", "bf16", "fp16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset",
        help="NeMo manifest (JSON lines with audio_filepath, relative to the manifest's folder or "
        "absolute, and text) or a folder of WAV/FLAC files each with a same-named .txt",
    )
    parser.add_argument("--model", help="cache-aware streaming .nemo to evaluate in this process")
    parser.add_argument(
        "--url",
        help="evaluate a running ASR server (ws://HOST:PORT) instead, at its right context; "
        "with --model too, the model's offline decoding is the comparison",
    )
    parser.add_argument(
        "--right-contexts",
        type=_int_list,
        help="comma-separated, e.g. 0,1,6,13 (default: every one the model supports)",
    )
    parser.add_argument(
        "--precisions",
        type=_precision_list,
        default=["fp32"],
        help="comma-separated from fp32,bf16,fp16 (default fp32)",
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument(
        "--streams",
        type=_positive,
        default=1,
        help="utterances in flight at once: batched engine streams or server connections "
        "(default 1; more is faster and measures finalize under load)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="with --url, send audio at the speed of speech (default: as fast as possible)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("ASR_AUTH_TOKEN"),
        help="the server's bearer token (default: $ASR_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--no-offline", action="store_true", help="skip offline decoding (and agreement)"
    )
    parser.add_argument(
        "--normalizer",
        choices=NORMALIZERS,
        default="english",
        help="english: Whisper's English normaliser, as published WERs use (default); "
        "none: case and punctuation count",
    )
    parser.add_argument("--limit", type=_positive, help="only the first N utterances")
    parser.add_argument("--worst", type=int, default=5, help="worst utterances listed per row")
    parser.add_argument("--json", type=Path, help="also write the full report, per utterance")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("nv_one_logger").setLevel(logging.ERROR)  # NeMo telemetry's import chatter
    from nemotron_speech.asr.errors import AsrError
    from nemotron_speech.evaluation.dataset import DatasetError, load_dataset, resampled_count
    from nemotron_speech.evaluation.metrics import make_normalizer
    from nemotron_speech.evaluation.report import format_table, score
    from nemotron_speech.evaluation.server_run import ServerEvalError

    problem = _argument_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        normalize = make_normalizer(args.normalizer)
        utterances = load_dataset(args.dataset, args.limit)
        hours = sum(u.duration for u in utterances) / 3600
        print(f"{len(utterances)} utterances, {hours:.2f} h of audio", file=sys.stderr)
        if resampled := resampled_count(utterances):
            print(f"{resampled} of them are not 16 kHz and are resampled", file=sys.stderr)
        if args.model:
            args.device = args.device or _default_device()
        rows = [score(run, utterances, normalize, args.worst) for run in _runs(args, utterances)]
        if args.json:
            args.json.write_text(json.dumps(_report(args, rows), indent=1) + "\n")
    except ImportError as exc:
        print(
            f"error: {exc}; eval needs the eval extra (pip install -e '.[eval]' in the clone), "
            "and --model the asr extra too",
            file=sys.stderr,
        )
        return 2
    except (DatasetError, AsrError, ServerEvalError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_caption(args))
    print(format_table(rows))
    return 0


def _caption(args: argparse.Namespace) -> str:
    """What the table measured, in one line (the JSON report has the same facts)."""
    measured = f"server {args.url}" if args.url else f"{args.model} on {args.device}"
    pacing = (", real-time pacing" if args.realtime else ", unpaced") if args.url else ""
    offline = "" if args.no_offline or not args.model else "; offline = fp32 whole-utterance"
    normalizer = "Whisper English" if args.normalizer == "english" else "no"
    return (
        f"{measured}, {args.streams} stream(s) at once{pacing}; {normalizer} text "
        f"normalisation{offline}"
    )


def _runs(args: argparse.Namespace, utterances: list) -> list:
    """Every configuration's decoding: the server's run, or one per right context and
    precision of the model."""
    if args.url:
        from nemotron_speech.evaluation.server_run import run_server

        run = run_server(args.url, utterances, args.token, args.streams, args.realtime)
        if not args.model or args.no_offline:
            return [run]
    from nemotron_speech.evaluation import engine_run  # needs torch: imported only here

    if args.url:
        reference = engine_run.offline_reference(
            args.model, utterances, run.right_context, args.device
        )
        return [replace(run, offline=reference)]
    contexts = args.right_contexts or engine_run.supported_right_contexts(args.model)
    runs = engine_run.run_model(
        args.model,
        utterances,
        contexts,
        args.precisions,
        args.device,
        args.streams,
        offline=not args.no_offline,
    )
    return list(runs)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _argument_problem(args: argparse.Namespace) -> str | None:
    if not (args.model or args.url):
        return "pass --model M.nemo (evaluate in this process) or --url ws://HOST:PORT (a server)"
    if args.url and args.right_contexts:
        return "--right-contexts needs --model alone; a server runs its own right context"
    if args.url and args.precisions != ["fp32"]:
        return "--precisions needs --model alone; a server runs its own precision"
    if args.realtime and not args.url:
        return "--realtime paces audio sent to a server; it needs --url"
    if args.model and not Path(args.model).is_file():
        return f"model not found: {args.model} (download it with `nemotron-speech download asr`)"
    return None


def _report(args: argparse.Namespace, rows: list[dict]) -> dict:
    return {
        "dataset": str(args.dataset),
        "model": args.model,
        "url": args.url,
        "device": args.device if args.model else None,
        "normalizer": args.normalizer,
        "streams": args.streams,
        "realtime": args.realtime if args.url else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "results": rows,
    }


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,6,13, got {text!r}") from None


def _precision_list(text: str) -> list[str]:
    values = text.split(",")
    unknown = [value for value in values if value not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown precision {', '.join(unknown)}; choose from {','.join(PRECISIONS)}"
        )
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
