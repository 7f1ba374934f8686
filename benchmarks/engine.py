"""ASR engine benchmark: stock NeMo against our engine variants on the same model and device.

    python -m benchmarks.engine                                        # CPU, generated test model
    python -m benchmarks.engine --device cuda --full-size --variants stock,eager,graphs,graphs-bf16

Per right context R and batch size B it times one steady-state step (median and max):
- stock: NeMo's `conformer_stream_step` on ready-made log-mel with batch caches (NeMo's example).
- eager / graphs / graphs-bf16 / eager-bf16: `AsrEngine.step()` with B streams that each got one
  new chunk of audio: batched log-mel, cache gather/scatter, encoder (eager or CUDA-graph replay,
  fp32 or bf16) and greedy RNNT decoding.
Then, per variant: batch-1 finalize latency, a real-time simulation (N streams, 20 ms packets at
random phases, lag = step end - moment the chunk was complete; real time = p99 lag <= chunk),
GPU memory, and token agreement with the eager fp32 engine on the same audio.
Every stream reads the test speech, random weights too. With --full-size (random weights) each
variant is first calibrated on its own engine, on that speech (see benchmarks/random_weights.py);
every row records the tokens per 80 ms frame its streams emitted, and a random-weight row outside
0.2-0.5 is marked invalid (`valid: false`, and an INVALID line).
Prints tables and writes JSON (default benchmarks/results/engine-<device>.json).
"""

from __future__ import annotations

import argparse
import difflib
import gc
import json
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    RESULTS,
    TINY_MODEL,
    code_identity,
    cpu_model,
    percentile,
    speech_audio,
    write_result,
)
from benchmarks.random_weights import (
    SPEECH_TOKENS_PER_FRAME,
    calibrate_blank_bias,
    calibration_segments,
    emission,
    full_size,
    invalid_note,
    restorer,
)
from benchmarks.realtime import RealTimeRun, real_time_lags, real_time_lags_in_processes
from benchmarks.timing import PhaseTimer, stats, time_finalize, time_steps, time_stock
from nemotron_speech.asr import AsrEngine
from nemotron_speech.asr.model import load_nemo_model, select_right_context

VARIANTS = {  # name -> AsrEngine options
    "eager": {"precision": "fp32", "cuda_graphs": False},
    "eager-bf16": {"precision": "bf16", "cuda_graphs": False},
    "graphs": {"precision": "fp32", "cuda_graphs": True},
    "graphs-bf16": {"precision": "bf16", "cuda_graphs": True},
    "graphs-fp16": {"precision": "fp16", "cuda_graphs": True},
    # the same graphs over NeMo's own attention and convolution modules
    "graphs-nemo-layers": {"precision": "fp32", "cuda_graphs": True, "fast_layers": False},
    "graphs-bf16-nemo-layers": {"precision": "bf16", "cuda_graphs": True, "fast_layers": False},
}


def agreement(reference: list[tuple[int, ...]], tokens: list[tuple[int, ...]]) -> dict:
    same = sum(a == b for a, b in zip(reference, tokens, strict=True))
    ratio = statistics.mean(
        difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio() if a or b else 1.0
        for a, b in zip(reference, tokens, strict=True)
    )
    return {"identical_utterances": f"{same}/{len(reference)}", "token_similarity": round(ratio, 4)}


def build_model(args, work: Path):
    if args.full_size:
        model, checksum = full_size(work, args.device)
        description = (
            f"full-size architecture, random weights (sha256 {checksum}), blank bias calibrated "
            f"per variant and right context for ~{args.tokens_per_frame} tokens per 80 ms frame"
        )
        return model, description
    path = Path(args.model or TINY_MODEL)
    model = load_nemo_model(path, device=args.device)
    return model, path.name


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        model, model_name = build_model(args, Path(work))
        args.model_file = Path(args.model or TINY_MODEL)
        if max(args.processes) > 1 and args.full_size:  # engine processes load the same weights
            args.model_file = Path(work) / "benchmark.nemo"  # uncalibrated: each adds its bias
            model.save_to(str(args.model_file))
        return measure(args, model, model_name)


def measure(args, model, model_name: str) -> dict:
    device = torch.device(args.device)
    restore = restorer(model)
    # Speech for random weights too: a row's emission is counted on the audio it streams, and
    # calibrated on noise (nearly the same logits on every frame) emission jumped from ~0 to
    # several tokens per frame across a tiny bias step, leaving rows invalid (H200, 2026-11-30).
    audio = speech_audio()
    utterances = [audio[n * 48000 : n * 48000 + 40000 + 4000 * n] for n in range(args.utterances)]
    result = {
        "date": date.today().isoformat(),
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": args.threads,
        "model": model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "command": " ".join(sys.argv),
        "code": code_identity(),
        "steps": [],
        "variants": {},
    }
    for right_context in args.right_contexts:
        reference = None
        for variant in args.variants:
            key = f"{variant}@R{right_context}"
            runner = run_stock if variant == "stock" else run_variant
            try:
                result["variants"][key] = runner(
                    args,
                    model,
                    restore,
                    variant,
                    right_context,
                    audio,
                    utterances,
                    result,
                    reference,
                )
            except Exception as exc:  # keep the rest of a scarce device run
                result["variants"][key] = {"error": repr(exc)}
                print(f"{key} failed: {exc!r}", flush=True)
                continue
            if variant == "eager":
                reference = result["variants"][key]["tokens"]
    invalid = [key for key, summary in result["variants"].items() if not summary.get("valid")]
    result["valid"] = not invalid
    if invalid:
        print(f"INVALID runs (emission outside the valid range): {', '.join(invalid)}", flush=True)
    return result


def calibrate(args, engine: AsrEngine, variant: str, audio: np.ndarray) -> dict:
    """Random weights: the blank bias that makes this engine emit like speech on `audio`, the
    speech every timed stream reads, in pieces as long as a real-time stream; and what it emits
    with it. A trained model is left as it is."""
    if not args.full_size:
        return {"blank_bias": 0.0, "joint_draw": 0}
    segments = calibration_segments(audio, seconds=args.realtime_seconds + args.realtime_settle)
    calibration = calibrate_blank_bias(engine, segments, args.tokens_per_frame)
    print(f"{variant} R={engine.right_context} calibration: {calibration}", flush=True)
    if not calibration["converged"]:
        print(
            f"{variant} R={engine.right_context}: calibration did not converge; kept the closest "
            f"bias tried ({calibration['tokens_per_frame']} tokens per frame)",
            flush=True,
        )
    return calibration


def run_stock(
    args, model, restore, variant, right_context, audio, utterances, result, reference
) -> dict:
    """NeMo's `conformer_stream_step` loop at every batch size, calibrated (random weights) on
    the engine that computes exactly what it does: eager fp32 over NeMo's layers."""
    device = torch.device(args.device)
    restore()
    exact = AsrEngine(model, right_context=right_context, cuda_graphs=False, fast_layers=False)
    calibration = calibrate(args, exact, variant, audio)
    summary = {"right_context": right_context, "calibration": calibration}
    del exact
    geometry = select_right_context(model, right_context)
    for batch in args.batches:
        reset_memory(device)
        times, tokens, samples = time_stock(model, batch, geometry, audio, args.steps, args.warm)
        emitted = emission(tokens, samples, args.full_size)
        row = record_step(
            result, device, variant, right_context, batch, geometry.chunk_ms, times, emitted
        )
        print_step(row)
    summary["valid"] = rows_valid(result, variant, right_context)
    return summary


def run_variant(
    args, model, restore, variant, right_context, audio, utterances, result, reference
) -> dict:
    """Step times, finalize latency, agreement and real-time lags of one engine variant."""
    device = torch.device(args.device)
    restore()
    engine = AsrEngine(
        model, right_context=right_context, max_buffered_seconds=300, **VARIANTS[variant]
    )
    summary: dict = {"right_context": right_context}
    summary["calibration"] = calibrate(args, engine, variant, audio)
    engine.warmup()
    phases = PhaseTimer(engine) if args.profile else None
    for batch in args.batches:
        reset_memory(device)
        times, tokens, samples = time_steps(engine, batch, audio, args.steps, args.warm, phases)
        emitted = emission(tokens, samples, args.full_size)
        row = record_step(
            result, device, variant, right_context, batch, engine.chunk_ms, times, emitted
        )
        if phases is not None:
            row["phases_ms"] = phases.take(args.steps)
        print_step(row)
    if phases is not None:
        phases.remove()
    finalize = time_finalize(engine, audio)
    summary["finalize_b1"] = stats(finalize["kept"])
    summary["reset_b1"] = stats(finalize["reset"])
    summary["tokens"] = [engine.transcribe(u).token_ids for u in utterances]
    summary["utterances_emission"] = emission(
        sum(map(len, summary["tokens"])), sum(map(len, utterances)), args.full_size
    )
    if variant == "eager":  # NeMo's own whole-utterance decoding is the reference of references
        offline = [tuple(engine.transcribe_offline(u)[0]) for u in utterances]
        summary["agreement_with_offline"] = agreement(offline, summary["tokens"])
        summary["tokens_per_utterance"] = [len(t) for t in summary["tokens"]]
    if reference is not None:
        summary["agreement_with_eager_fp32"] = agreement(reference, summary["tokens"])
    summary["real_time"] = []
    if 1 in args.processes:
        for streams in args.realtime:
            reset_memory(device)
            simulated = real_time_lags(
                engine, streams, audio, args.realtime_seconds, args.realtime_settle
            )
            simulated.peak_gpu_gb = peak_memory_gb(device)
            summary["real_time"].append(real_time_row(args, streams, 1, simulated, engine.chunk_ms))
    chunk_ms = engine.chunk_ms
    del engine
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for processes in (p for p in args.processes if p > 1):
        for streams in args.realtime:
            simulated = real_time_lags_in_processes(
                args.model_file,
                {"device": args.device, "right_context": right_context, **VARIANTS[variant]},
                summary["calibration"],
                processes,
                streams,
                audio,
                args.realtime_seconds,
                args.realtime_settle,
            )
            summary["real_time"].append(
                real_time_row(args, streams, processes, simulated, chunk_ms)
            )
    summary["valid"] = (
        rows_valid(result, variant, right_context)  # timed rows only: the agreement
        and all(row["valid"] for row in summary["real_time"])  # utterances are a few seconds
    )
    for row in summary["real_time"]:
        if not row["valid"]:
            print(f"real time {row['streams']} x {row['processes']}: {invalid_note(row)}")
    printable = {k: v for k, v in summary.items() if k != "tokens"}
    print(f"{variant} R={right_context}: " + json.dumps(printable), flush=True)
    return summary


def real_time_row(args, streams, processes, simulated: RealTimeRun, chunk_ms) -> dict:
    lags, batches = simulated.lags, simulated.batches
    return {
        "streams": streams,
        "processes": processes,
        "chunks": len(lags),
        "steps_per_s": round(len(batches) / args.realtime_seconds, 1),
        "batch_p50": int(percentile(batches, 50)) if batches else 0,
        **stats(lags or [float("inf")]),
        "real_time": bool(lags) and stats(lags)["p99_ms"] <= chunk_ms,
        **emission(simulated.tokens, simulated.samples, args.full_size),
        "peak_gpu_gb": simulated.peak_gpu_gb,
    }


def record_step(result, device, variant, right_context, batch, chunk_ms, times, emitted) -> dict:
    """One step-time row (with peak memory since the last reset and the emission while it was
    timed), added to the result."""
    row = {
        "variant": variant,
        "right_context": right_context,
        "batch": batch,
        "chunk_ms": chunk_ms,
        **stats(times),
        "peak_gpu_gb": peak_memory_gb(device),
        **emitted,
    }
    result["steps"].append(row)
    return row


def rows_valid(result, variant: str, right_context: int) -> bool:
    """Whether every step row of `variant` at `right_context` emitted in the valid range."""
    return all(
        row["valid"]
        for row in result["steps"]
        if (row["variant"], row["right_context"]) == (variant, right_context)
    )


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def print_step(row: dict) -> None:
    if not getattr(print_step, "printed", False):
        print(
            "| variant | R | B | chunk ms | p50 ms | p99 ms | max ms | peak GPU GB "
            "| tokens/frame | valid |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        print_step.printed = True
    print(
        f"| {row['variant']} | {row['right_context']} | {row['batch']} | {row['chunk_ms']:.0f} "
        f"| {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} "
        f"| {row.get('peak_gpu_gb') or '-'} | {row['tokens_per_frame']} "
        f"| {'yes' if row['valid'] else 'NO'} | {row.get('phases_ms', '')}",
        flush=True,
    )
    if not row["valid"]:
        print(invalid_note(row), flush=True)


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help=".nemo file (default: the generated test model)")
    parser.add_argument("--full-size", action="store_true", help="~0.6 B architecture, random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=["stock", "eager"])
    parser.add_argument("--right-contexts", type=int_list, default=[0, 1, 6, 13])
    parser.add_argument("--batches", type=int_list, default=[1, 4, 16])
    parser.add_argument(
        "--realtime",
        type=int_list,
        default=[1, 8],
        help="stream counts for the real-time simulation",
    )
    parser.add_argument("--realtime-seconds", type=float, default=3.0, help="measured part")
    parser.add_argument(
        "--processes",
        type=int_list,
        default=[1],
        help="run the real-time simulation in each of these numbers of engine processes",
    )
    parser.add_argument(
        "--realtime-settle", type=float, default=1.0, help="seconds run before measuring"
    )
    parser.add_argument("--utterances", type=int, default=4, help="for token agreement")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--warm", type=int, default=3, help="untimed steps per row")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--tokens-per-frame",
        type=float,
        default=SPEECH_TOKENS_PER_FRAME,
        help="emission rate random weights are calibrated to",
    )
    parser.add_argument(
        "--profile", action="store_true", help="time step phases (synchronises between them)"
    )
    parser.add_argument("--json", type=Path, help="output file")
    args = parser.parse_args()
    result = run(args)
    out = args.json or RESULTS / f"engine-{args.device.split(':')[0]}.json"
    write_result(out, result)


if __name__ == "__main__":
    main()
