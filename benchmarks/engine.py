"""ASR engine benchmark: step time by batch size and right context, real-time capacity, finalize
latency and memory, for our engine and for stock NeMo `conformer_stream_step` on the same model.

    python benchmarks/engine.py                                  # CPU, generated test model
    python benchmarks/engine.py --device cuda --full-size        # GPU, ~0.6 B random weights
    python benchmarks/engine.py --device cuda --model M.nemo     # GPU, a real checkpoint

"ours" times `AsrEngine.step()` with B streams that each have one new chunk of audio: incremental
log-mel for every stream, cache gather/scatter and the batched model call with greedy decoding.
"stock" times NeMo's `conformer_stream_step` on ready-made log-mel with batch caches, the way the
NeMo example drives it. Capacity is the largest measured B whose slowest step fits in one chunk
(every stream's chunk processed within its own duration); stream-equivalents = B x chunk / p50.
Prints one table and writes JSON (default benchmarks/results/engine-<device>.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from nemotron_speech.asr import AsrEngine
from nemotron_speech.asr.model import configure_decoding, load_nemo_model

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = ROOT / "tests" / "assets" / "asr" / "tiny-asr.nemo"
SPEECH = sorted((ROOT / "tests" / "assets" / "asr" / "speech").glob("[0-9][0-9].wav"))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def audio_source(full_size: bool) -> np.ndarray:
    """Test speech for a trained model; quiet noise for random weights (same compute)."""
    if full_size or not SPEECH:
        return (np.random.default_rng(0).standard_normal(16000 * 60) * 0.05).astype(np.float32)
    import soundfile

    return np.concatenate([soundfile.read(p, dtype="float32")[0] for p in SPEECH])


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()


def time_ours(engine: AsrEngine, batch: int, audio: np.ndarray, steps: int, warm: int):
    """Median and max step time with `batch` streams in steady state, plus peak memory."""
    chunk = engine.geometry.chunk * engine.geometry.hop_samples
    streams = [engine.open_stream() for _ in range(batch)]
    offsets = [(n * 7919 * chunk) % (len(audio) - chunk * (steps + warm + 2)) for n in range(batch)]
    for n, stream in enumerate(streams):  # the first step takes a longer chunk
        engine.feed(stream, pcm16(audio[offsets[n] : offsets[n] + chunk + 320]))
        offsets[n] += chunk + 320
    times = []
    for index in range(warm + steps):
        for n, stream in enumerate(streams):
            engine.feed(stream, pcm16(audio[offsets[n] : offsets[n] + chunk]))
            offsets[n] += chunk
        synchronize(engine.device)
        started = time.perf_counter()
        engine.step()
        synchronize(engine.device)
        assert engine.last_step.batch_size == batch, engine.last_step
        if index >= warm:
            times.append(1000 * (time.perf_counter() - started))
    for stream in streams:
        engine.close(stream)
    return times


def time_stock(model, batch: int, geometry, steps: int, warm: int):
    """NeMo's own loop: batch caches, later-step chunks of log-mel, hypotheses carried along."""
    device = next(model.parameters()).device
    features = model.cfg.preprocessor.features
    frames = geometry.pre_encode_cache + geometry.chunk
    generator = torch.Generator(device="cpu").manual_seed(0)
    channel, time_cache, channel_len = model.encoder.get_initial_cache_state(
        batch_size=batch, device=device
    )
    hypotheses = None
    lengths = torch.full((batch,), frames, device=device)
    times = []
    for index in range(warm + steps):
        signal = torch.randn(batch, features, frames, generator=generator).to(device)
        synchronize(device)
        started = time.perf_counter()
        with torch.inference_mode():
            outputs = model.conformer_stream_step(
                processed_signal=signal,
                processed_signal_length=lengths,
                cache_last_channel=channel,
                cache_last_time=time_cache,
                cache_last_channel_len=channel_len,
                keep_all_outputs=False,
                previous_hypotheses=hypotheses,
                drop_extra_pre_encoded=geometry.drop_extra_pre_encoded,
                return_transcription=True,
            )
        synchronize(device)
        _, _, channel, time_cache, channel_len, hypotheses = outputs
        if index >= warm:
            times.append(1000 * (time.perf_counter() - started))
    return times


def time_finalize(engine: AsrEngine, audio: np.ndarray, repeats: int = 5) -> list[float]:
    """Batch-1 latency of a hard finalize after 2 s of audio: padding, last steps, final text."""
    times = []
    for n in range(repeats):
        stream = engine.open_stream()
        engine.feed(stream, pcm16(audio[n * 32000 : (n + 1) * 32000]))
        while engine.has_work():
            engine.step()
        synchronize(engine.device)
        started = time.perf_counter()
        engine.finalize(stream)
        synchronize(engine.device)
        times.append(1000 * (time.perf_counter() - started))
        engine.close(stream)
    return times


def load_model(args, work: Path):
    if args.full_size:
        from nemotron_speech.testing.make_model import build_full_size

        model = build_full_size(work).eval()
        configure_decoding(model, args.cuda_graph_decoder)
        return model.to(torch.device(args.device)), "full-size architecture, random weights"
    path = Path(args.model or TINY_MODEL)
    model = load_nemo_model(path, device=args.device, cuda_graph_decoder=args.cuda_graph_decoder)
    return model, path.name


def summarize(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as work:
        model, model_name = load_model(args, Path(work))
    params = sum(p.numel() for p in model.parameters())
    audio = audio_source(args.full_size)
    rows, finalize = [], {}
    for right_context in args.right_contexts:
        engine = AsrEngine(model, right_context=right_context, max_buffered_seconds=120)
        engine.warmup()
        for batch in args.batches:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            ours = summarize(time_ours(engine, batch, audio, args.steps, args.warm))
            memory = (
                torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            )
            stock = summarize(time_stock(model, batch, engine.geometry, args.steps, args.warm))
            rows.append(
                {
                    "right_context": right_context,
                    "batch": batch,
                    "chunk_ms": engine.chunk_ms,
                    "ours": ours,
                    "stock": stock,
                    "ours_stream_equivalents": int(batch * engine.chunk_ms / ours["p50_ms"]),
                    "ours_real_time": ours["max_ms"] <= engine.chunk_ms,
                    "peak_gpu_memory_gb": None if memory is None else round(memory, 2),
                }
            )
            print_row(rows[-1])
        finalize[right_context] = summarize(time_finalize(engine, audio))
        capacity = [
            r["batch"] for r in rows if r["right_context"] == right_context and r["ours_real_time"]
        ]
        finalize[right_context]["real_time_capacity"] = max(capacity, default=0)
        print(f"R={right_context}: finalize latency at B=1 {finalize[right_context]}")
    return {
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": args.threads,
        "model": model_name,
        "parameters": params,
        "steps": args.steps,
        "rows": rows,
        "finalize": finalize,
        "command": " ".join(sys.argv),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


HEADER = (
    "| R | B | chunk ms | ours p50 | ours max | stock p50 | stock max | ours stream-eq "
    "| ours real time | peak GPU GB |\n|---|---|---|---|---|---|---|---|---|---|"
)


def print_row(row: dict) -> None:
    if not getattr(print_row, "printed", False):
        print(HEADER)
        print_row.printed = True
    print(
        f"| {row['right_context']} | {row['batch']} | {row['chunk_ms']:.0f} "
        f"| {row['ours']['p50_ms']} | {row['ours']['max_ms']} | {row['stock']['p50_ms']} "
        f"| {row['stock']['max_ms']} | {row['ours_stream_equivalents']} "
        f"| {'yes' if row['ours_real_time'] else 'no'} | {row['peak_gpu_memory_gb'] or '-'} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help=".nemo file (default: the generated test model)")
    parser.add_argument(
        "--full-size", action="store_true", help="~0.6 B architecture, random weights"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--right-contexts", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 6, 13]
    )
    parser.add_argument(
        "--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 16]
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--warm", type=int, default=3, help="untimed steps per row")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cuda-graph-decoder", action="store_true")
    parser.add_argument("--json", type=Path, help="output file")
    args = parser.parse_args()
    result = run(args)
    out = args.json or ROOT / "benchmarks" / "results" / f"engine-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
