"""Magpie TTS engine: time to first audio and real-time factor by batch size.

    python -m benchmarks.tts                          # CPU: the generated test model
    python -m benchmarks.tts --full-size --device cuda --precisions fp32,bf16 --batches 1,4,16
    python -m benchmarks.tts --full-size --device cuda --steps nemo,graphs   # CUDA graphs or not

A row: B requests of `--text` started together as one batch (`MagpieEngine.run`), each made to
last exactly `--frames` codec frames (random weights would stop anywhere: EOS is forbidden until
then, and the step limit ends it there). NeMo's attention prior stays on, as the released
checkpoint has it; classifier-free guidance and the local transformer too (the engine's path).
- first audio: start -> a request's first streamed chunk (`--first-chunk` frames decoded);
- whole: start -> the batch's audio decoded once at the end (NeMo's own path): the first audio
  that sentence-level chunks would give;
- RTF: wall time / audio seconds of one request (all B requests play at once; below 1 is faster
  than real time); throughput: audio seconds made per wall second, all requests together;
- stream overhead: streamed wall time / whole wall time (the chunked codec decodes);
- steps: how each frame's decoder and sampling run (`MagpieEngine.steps`): NeMo's own calls,
  the same arithmetic as fixed-shape steps ("static"), or those replayed from CUDA graphs
  (without `--steps`, the engine's default: graphs on CUDA, NeMo's calls on a CPU).
`--full-size` builds the published magpie_tts_multilingual_357m architecture with NanoCodec's
decoder (`testing.make_magpie.FULL_*`, random weights: the compute of trained ones).
Prints one table and writes JSON (default benchmarks/results/tts-<device>.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks.common import RESULTS, ROOT, cpu_model, percentile, write_result

TINY = ROOT / "tests" / "assets" / "tts"
TEXT = "Sure, I can help with that: the weather in Paris is sunny and twenty two degrees today."


def load_engine(args):
    """The test model from its files, or the full-size architecture built in memory."""
    import torch

    from nemotron_speech.testing.make_magpie import (
        CODEC_FILE,
        FULL_CODEC,
        FULL_MAGPIE,
        MAGPIE_FILE,
        build_models,
    )
    from nemotron_speech.tts.magpie.engine import MagpieEngine

    options = {"first_chunk_frames": args.first_chunk, "chunk_frames": args.chunk}
    options = {k: v for k, v in options.items() if v is not None}  # else the engine's defaults
    if not args.full_size:
        return MagpieEngine.load(TINY / MAGPIE_FILE, TINY / CODEC_FILE, args.device, **options)
    with tempfile.TemporaryDirectory() as work:
        _, model = build_models(Path(work), FULL_CODEC, FULL_MAGPIE, speakers=5)
    model.use_kv_cache_for_inference = True
    return MagpieEngine(model.to(torch.device(args.device)), **options)


def fix_length(engine, frames: int) -> None:
    """Every request lasts `frames` frames: no EOS before, the step limit at it."""
    parameters = engine.model.inference_parameters
    parameters.max_decoder_steps = frames
    parameters.min_generated_frames = frames
    parameters.ignore_finished_sentence_tracking = True  # no forced EOS (all logits -inf)


def timed_batch(engine, requests, stream: bool) -> tuple[float, list[float], int]:
    """(wall seconds, first-chunk seconds per request, samples per request) of one batch."""
    import torch

    first: dict[int, float] = {}
    samples: dict[int, int] = {}

    def on_audio(index: int, audio) -> None:  # after .cpu(): the device has synchronised
        first.setdefault(index, time.perf_counter() - started)
        samples[index] = samples.get(index, 0) + len(audio)

    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    engine.run(requests, on_audio, stream=stream, seed=0)
    wall = time.perf_counter() - started
    return wall, [first[i] for i in range(len(requests))], samples[0]


def measure(engine, batch: int, text: str, rounds: int) -> dict:
    requests = [engine.check(text, engine.voices[i % len(engine.voices)]) for i in range(batch)]
    timed_batch(engine, requests, stream=True)  # warm: allocations, kernels for this shape
    firsts, walls, wholes = [], [], []
    samples = 0
    for _ in range(rounds):
        wall, first, samples = timed_batch(engine, requests, stream=True)
        walls.append(wall)
        firsts.extend(first)
        wholes.append(timed_batch(engine, requests, stream=False)[0])
    audio_s = samples / engine.sample_rate
    wall = percentile(walls, 50)
    return {
        "batch": batch,
        "audio_s": round(audio_s, 3),
        "first_audio_p50_ms": round(1000 * percentile(firsts, 50), 1),
        "first_audio_p90_ms": round(1000 * percentile(firsts, 90), 1),
        "whole_p50_ms": round(1000 * percentile(wholes, 50), 1),
        "stream_wall_p50_ms": round(1000 * wall, 1),
        "rtf": round(wall / audio_s, 3),
        "throughput_x": round(batch * audio_s / wall, 2),
        "stream_overhead": round(wall / percentile(wholes, 50), 3),
    }


def machine(device: str) -> dict:
    import nemo
    import torch

    info = {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__}
    info["nemo"] = nemo.__version__
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["threads"] = torch.get_num_threads()
    return info


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    loaded = time.perf_counter()
    engine = load_engine(args)
    load_s = time.perf_counter() - loaded
    fix_length(engine, args.frames)
    params = sum(p.numel() for n, p in engine.model.named_parameters() if "_codec_model" not in n)
    result = {
        "date": date.today().isoformat(),
        "command": " ".join(["python -m benchmarks.tts", *args.argv]),
        "machine": machine(args.device),
        "model": "full-size (random weights)" if args.full_size else "generated test model",
        "magpie_parameters": params,
        "incremental_decode": engine.codec_stream is not None,
        "frames": args.frames,
        "first_chunk_frames": engine.first_chunk_frames,
        "load_s": round(load_s, 1),
        "rows": [],
    }
    print(f"{'steps':>6} {'precision':>9} {'B':>3} {'chunk':>5} {'first p50':>10} "
          f"{'first p90':>10} {'whole':>9} {'RTF':>6} {'x real':>7} {'overhead':>8}")  # fmt: skip
    # small batches of every variant first: what a cut-off run should still have
    variants = [(s, p) for s in args.steps or [engine.steps] for p in args.precisions]
    plan = [(*v, b, engine.chunk_frames) for b in args.batches for v in variants]
    plan += [(*v, 1, c) for v in variants for c in args.more_chunks]
    for steps, precision, batch, chunk in plan:
        engine.steps, engine.precision, engine.chunk_frames = steps, precision, chunk
        if engine.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        row = {"steps": steps, "precision": precision, "chunk": chunk}
        row |= measure(engine, batch, args.text, args.rounds)
        if engine.device.type == "cuda":
            row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["rows"].append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)  # every row: a cut-off run keeps it
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{steps:>6} {precision:>9} {batch:>3} {chunk:>5} "
              f"{row['first_audio_p50_ms']:>8.0f}ms "
              f"{row['first_audio_p90_ms']:>8.0f}ms {row['whole_p50_ms']:>7.0f}ms "
              f"{row['rtf']:>6.3f} {row['throughput_x']:>7.1f} {row['stream_overhead']:>8.2f}",
              flush=True)  # fmt: skip
    return result


def int_list(value: str) -> list[int]:
    return [int(v) for v in value.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-size", action="store_true", help="357M architecture, random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", type=lambda s: s.split(","), default=["fp32"])
    parser.add_argument(
        "--steps",
        type=lambda s: s.split(","),
        help="nemo, static, graphs (default: the engine's, graphs on CUDA)",
    )
    parser.add_argument("--batches", type=int_list, default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=64, help="codec frames per request")
    parser.add_argument("--first-chunk", type=int, help="frames in the first streamed chunk")
    parser.add_argument("--chunk", type=int, help="frames in every later chunk")
    parser.add_argument(
        "--more-chunks", type=int_list, default=[], help="B=1 rows with these later chunk sizes"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed batches per row")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="output file")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.out = args.json or RESULTS / f"tts-{args.device.split(':')[0]}.json"
    write_result(args.out, run(args))


if __name__ == "__main__":
    main()
