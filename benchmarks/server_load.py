"""ASR server load benchmark: N concurrent clients streaming speech at real time.

    python -m benchmarks.server_load                         # CPU, generated test model, N=1,8,32
    python -m benchmarks.server_load --device cuda --full-size --clients 1,64,256,400 \
        --client-processes 8

Starts the server (or uses --url), then for each N runs N clients for --seconds. Each client
sends 20 ms PCM16 packets paced by the clock, cycling through the test sentences; after each
sentence it sends `end` and waits for the final. Per N it reports:
- lag: for every interim, arrival time minus the send time of the packet that completed the
  audio its text needed (the interim's `audio_ms`, protocol version 3): what a user's client
  sees, network and the server's front processes included. Until 2026-11-30 it was timed from
  the packet after which a solo run first showed the same text, and random weights, whose
  tokens near logit ties can come a chunk later in a batch than alone, put a tail of one or
  two chunks (160, 320 ms) on it that no audio waited for (inferred: on an H200 at 1,024
  streams its p99 was its p50 plus one chunk, docs/benchmarks.md). Interims of chunks run after
  a sentence's `end` carry no `audio_ms` and are counted, not timed (`untimed_interims`). A
  model that emits nothing sends no interims, and the lag is then reported as missing, not as a
  number. The server's own lag (`asr_interim_lag_seconds`: frame that made a chunk ready
  arrived -> its interim sent) is reported beside it from /metrics. Counted for sentences
  that got their final; `exact_lag_ms` only for those whose final equals the solo run's.
- tokens per 80 ms frame: the server sends text, not tokens, so the benchmark streams every
  sentence alone through an engine of the server's configuration in this process (the same
  engine that calibrates random weights) and counts its tokens; a row's emission is that of
  the sentences whose finals it received (exact for the exact finals, the solo run's for the
  others). A random-weight (--full-size) row outside 0.2-0.5 is marked invalid.
- finalize: `end` (or `finalize`, with --final-request finalize) sent -> final received.
- exact: finals equal to the final of the same sentence streamed alone (for the test model that
  is the sentence itself; with --full-size random weights, garbage, but the same garbage).
- audio_seconds: the audio the clients sent and what reached the engine
  (`asr_audio_seconds_total`); they are equal unless audio was lost (printed as AUDIO LOST).
- server CPU (% of one core, from /proc, summed over the server and all its descendant
  processes, e.g. --workers fronts and the engine process; in brackets the busiest process, the
  bound when it nears 100; the JSON has every process and the main thread, a one-process
  server's event loop) and that over N (CPU per stream), this process's CPU (the clients),
  GPU utilisation and memory (sampled with nvidia-smi when on cuda; null where nvidia-smi does
  not exist), steps per second, mean batch size and step time, the scheduler's seconds per
  second by activity (from /metrics), and the machine's 1-minute load average at the end (other
  work on the machine skews results).
With --profile-seconds S, py-spy records S seconds of the server's busiest process in each row
once its clients are connected (`server_profile.py`; raw stacks beside the JSON, top functions
in the row).
Prints one table and writes JSON (default benchmarks/results/server-load-<device>.json).
The clients run in this process: on a small machine they compete with the server for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

from benchmarks.common import RESULTS, ROOT, TINY_MODEL, code_identity, cpu_model, write_result
from benchmarks.load_clients import Utterance, load_utterances, solo_finals
from benchmarks.load_rows import print_row, run_level
from benchmarks.server_profile import py_spy
from nemotron_speech.server.__main__ import build_parser
from nemotron_speech.server.launcher import AsrServerProcess, start_server

# Server options set here unless the command line sets them (it comes after, so it wins): R stated
# (the in-process engine and the JSON need the number; the server's default is the model's), and
# room for thousands of streams and 1 MiB frames.
SERVER_DEFAULTS = (
    "--right-context", "1", "--max-streams", "4096", "--max-message-bytes", "1048576",
)  # fmt: skip
LAUNCHER_OPTIONS = ("host", "port", "port_file")  # a free port of 127.0.0.1, found via its file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """This benchmark's own options; any other is the server's, checked by the server's own parser
    and passed on to the server started here, so a server option added later needs no change
    here. The server's values join the namespace: the in-process engine and the JSON read them."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Any other option is the server's (python -m nemotron_speech.server --help: "
        "--device, --precision, --workers, --engine-process, --engine-processes, "
        "--batch-wait-ms, ...), passed to the server started here; the in-process engine "
        "follows its --device, --precision, --right-context and CUDA graphs. Set here unless "
        f"given: {' '.join(SERVER_DEFAULTS)}.",
    )
    parser.add_argument("--url", help="use a running server instead of starting one")
    parser.add_argument("--token", default=None)
    parser.add_argument("--model", type=Path, default=TINY_MODEL)
    parser.add_argument("--clients", default="1,8,32", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=20.0, help="per N")
    parser.add_argument(
        "--client-processes", type=int, default=1, help="spread the clients over K processes"
    )
    parser.add_argument(
        "--full-size", action="store_true",
        help="serve the ~0.6 B architecture with random weights (built, calibrated, saved first)",
    )  # fmt: skip
    parser.add_argument(
        "--final-request", default="end", choices=("end", "finalize"),
        help="what ends each sentence: end (a reset) or finalize (context kept)",
    )  # fmt: skip
    parser.add_argument(
        "--profile-seconds", type=int, default=0,
        help="py-spy the server's busiest process this long in each row (see server_profile)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args, server_argv = parser.parse_known_args(argv)
    server_parser = build_parser()
    server_parser.exit_on_error = False  # a bad server option is this command's error
    args.server_argv = [*SERVER_DEFAULTS, *server_argv]
    try:
        server, unknown = server_parser.parse_known_args(args.server_argv)
    except argparse.ArgumentError as exc:
        parser.error(str(exc))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if any(getattr(server, k) != server_parser.get_default(k) for k in LAUNCHER_OPTIONS):
        parser.error(
            "the server is started on a free port of 127.0.0.1: drop --host, --port and "
            "--port-file, or pass --url of a server you started"
        )
    vars(args).update((k, v) for k, v in vars(server).items() if k != "model")  # --model: ours
    args.out = args.out or RESULTS / f"server-load-{args.device}.json"
    if args.profile_seconds:
        if args.url:
            parser.error("--profile-seconds profiles a server it starts; drop --url")
        if not 1 <= args.profile_seconds < args.seconds:
            parser.error("--profile-seconds must be at least 1 and less than --seconds")
        py_spy()  # exits with how to install it, before any model is built
    return args


def solo_runs(args, work: Path, utterances: list[Utterance]) -> None:
    """Count each sentence's tokens streamed alone through an engine of the server's
    configuration (model, precision, graphs on a GPU, right context) in this process. With
    --full-size, first calibrate the random weights on that engine to emit like speech on the
    test sentences (what the clients send), then save them (fp32: the server casts them) for
    the server."""
    import torch

    from benchmarks.random_weights import calibrate_blank_bias, full_size, restorer
    from nemotron_speech.asr import AsrEngine
    from nemotron_speech.asr.model import load_nemo_model

    if args.full_size:
        model, checksum = full_size(work, args.device)
    else:
        model = load_nemo_model(args.model, device=args.device)
    restore = restorer(model)
    engine = AsrEngine(
        model,
        right_context=args.right_context,
        precision=args.precision,
        cuda_graphs=args.cuda_graphs and args.device.startswith("cuda"),
        max_graph_batch=1,  # one stream at a time
    )
    if args.full_size:
        # each sentence from a fresh stream, as the clients send them (reset after each)
        calibration = calibrate_blank_bias(engine, [u.samples for u in utterances])
        print(f"calibration at {args.precision}: {calibration}", flush=True)
        args.model_description = (
            f"full-size architecture, random weights (sha256 {checksum}, joint output draw "
            f"{calibration['joint_draw']}), blank bias {calibration['blank_bias']} "
            f"for ~0.3 tokens per 80 ms frame on the test sentences at R={args.right_context}, "
            f"{args.precision}"
        )
    for utterance in utterances:
        final = engine.transcribe(utterance.samples)
        utterance.tokens, utterance.solo_final = len(final.token_ids), final.text
    if args.full_size:
        restore(keep_calibration=True)
        args.model = work / "full-size.nemo"
        model.save_to(str(args.model))
    del engine, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the server's memory


def serve(args) -> AsrServerProcess:
    """The server on a free port, its log on this process's stderr."""
    return start_server(
        *args.server_argv, model=args.model, timeout=1800,
        extra_env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )  # fmt: skip


def main() -> None:
    args = parse_args()
    work = tempfile.TemporaryDirectory()
    utterances = load_utterances()
    solo_runs(args, Path(work.name), utterances)
    server = None if args.url else serve(args)
    url = args.url or server.url
    asyncio.run(solo_finals(url, args.token, utterances))
    wrong = sum(u.final != u.text for u in utterances)
    if wrong and not args.full_size:
        print(f"warning: {wrong} sentences not transcribed exactly alone", file=sys.stderr)
    differ = sum(u.final != u.solo_final for u in utterances)
    if differ:
        print(
            f"warning: {differ} sentences' server finals differ from the in-process engine's; "
            "their token counts are the engine's",
            file=sys.stderr,
        )
    rows = []
    try:
        for n in (int(x) for x in args.clients.split(",")):
            rows.append(run_level(args, url, n, server.process.pid if server else None, utterances))
            print_row(rows[-1], header=len(rows) == 1)
    finally:
        if server is not None:
            server.stop(timeout=30)
        work.cleanup()
    if args.device.startswith("cuda") and not shutil.which("nvidia-smi"):
        print("GPU utilisation not measured: nvidia-smi does not exist here (gpu: null)")
    result = {
        "date": date.today().isoformat(),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "device": args.device,
        "model": args.model_description if args.full_size else os.path.relpath(args.model, ROOT),
        "right_context": args.right_context,
        "batch_wait_ms": args.batch_wait_ms,
        "precision": args.precision,
        "workers": args.workers,
        "engine_process": args.engine_process or args.engine_processes > 1,
        "engine_processes": args.engine_processes,
        "command": " ".join(sys.argv),
        "code": code_identity(),
        "solo_tokens": [u.tokens for u in utterances],
        "server_finals_differing_from_engine": differ,
        "valid": all(row["valid"] for row in rows),
        "rows": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
