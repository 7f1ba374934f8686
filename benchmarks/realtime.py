"""Real-time simulation of many streams on one engine, or on several engine processes sharing a
GPU.

N streams send 20 ms packets at random phases; the loop steps whenever a chunk is ready; the lag
of a chunk is the end of the step that ran it minus the moment its audio was complete ("real
time" = p99 lag <= one chunk). At the end every stream is finalized and its tokens counted: the
decoder's share of a step depends on how much the model emits. Packet feeding runs on the
engine's thread, as in a server's inference process. With `processes` > 1 the streams are split
over that many processes, each with its own engine on the same GPU (one Python thread cannot
prepare 1,000 streams' chunks in time; processes run that host work in parallel while their GPU
work interleaves).
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.random_weights import apply_calibration
from nemotron_speech.asr import AsrEngine
from nemotron_speech.asr.model import load_nemo_model
from nemotron_speech.protocol import SAMPLE_RATE

PACKET_S = 0.02


@dataclass
class RealTimeRun:
    """What a simulation measured: chunk lags (ms), the batch size of every step, and the
    tokens the streams emitted over `samples` of audio (all streams together)."""

    lags: list[float] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    tokens: int = 0
    samples: int = 0
    peak_gpu_gb: float = 0.0

    def add(self, other: RealTimeRun) -> None:
        self.lags += other.lags
        self.batches += other.batches
        self.tokens += other.tokens
        self.samples += other.samples
        self.peak_gpu_gb += other.peak_gpu_gb


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()


def finish(engine: AsrEngine, stream_ids: list[int]) -> int:
    """Finalize (reset) and close `stream_ids`; the tokens their finals carry (everything they
    emitted since their last final)."""
    for stream in stream_ids:
        engine.request_finalize(stream, reset=True)
    tokens = 0
    while engine.has_work():
        tokens += sum(len(t.token_ids) for t in engine.step() if t.is_final)
    for stream in stream_ids:
        engine.close(stream)
    return tokens


def real_time_lags(
    engine: AsrEngine, streams: int, audio: np.ndarray, seconds: float, settle: float, seed=0
) -> RealTimeRun:
    """Chunk lags (ms) of `streams` real-time streams, counting chunks complete after `settle`
    seconds (all streams start at once, so their first, eager steps coincide), the batch size
    of every step after `settle`, and the tokens emitted over the whole run."""
    packet = int(PACKET_S * SAMPLE_RATE)
    source = pcm16(audio)  # converted once: the simulation times the engine, not its client
    phases = np.random.default_rng([streams, seed]).uniform(0, engine.chunk_ms / 1000, streams)
    ids = [engine.open_stream() for _ in range(streams)]
    sent = [0] * streams
    ready_at: dict[int, float] = {}
    lags: list[float] = []
    batches: list[int] = []
    start = time.perf_counter()
    while (now := time.perf_counter() - start) < seconds + settle:
        for n, stream in enumerate(ids):
            due = int((now - phases[n]) / PACKET_S)
            while sent[n] < due:
                offset = (((n + seed * streams) * 104729 + sent[n]) * packet) % (
                    len(audio) - packet
                )
                engine.feed(stream, source[2 * offset : 2 * (offset + packet)])
                sent[n] += 1
                if stream not in ready_at and engine.has_chunk(stream):
                    ready_at[stream] = phases[n] + sent[n] * PACKET_S
        if not ready_at:
            time.sleep(0.0005)
            continue
        engine.step()
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        done = time.perf_counter() - start
        for stream in engine.last_step.stream_ids:
            complete = ready_at.pop(stream)
            if complete >= settle:
                lags.append(float(1000 * (done - complete)))
        if done >= settle:
            batches.append(engine.last_step.batch_size)
    return RealTimeRun(lags, batches, finish(engine, ids), sum(sent) * packet)


def _worker(model_path, options, calibration, seed, streams, audio, seconds, settle, barrier, out):
    torch.set_num_threads(1)
    options = dict(options)
    model = load_nemo_model(model_path, device=options.pop("device"))
    apply_calibration(model, calibration)  # the variant's, made in the parent
    engine = AsrEngine(model, max_buffered_seconds=300, **options)
    engine.warmup()
    barrier.wait()  # every process simulates over the same wall-clock window
    run = real_time_lags(engine, streams, audio, seconds, settle, seed)
    if engine.device.type == "cuda":
        run.peak_gpu_gb = torch.cuda.max_memory_allocated() / 1e9
    out.put(run)


def real_time_lags_in_processes(
    model_path: Path,
    options: dict,
    calibration: dict,
    processes: int,
    streams: int,
    audio: np.ndarray,
    seconds: float,
    settle: float,
) -> RealTimeRun:
    """`real_time_lags` over `processes` engine processes (loaded from `model_path` with
    `options`, which name the device, and the variant's `calibration` applied) sharing `streams`;
    its peak GPU memory is their sum in GB."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    shares = [streams // processes + (n < streams % processes) for n in range(processes)]
    options = {"max_graph_batch": max(shares), **options}
    workers = [
        context.Process(
            target=_worker,
            args=(
                model_path,
                options,
                calibration,
                n,
                share,
                audio,
                seconds,
                settle,
                barrier,
                results,
            ),
        )
        for n, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    total = RealTimeRun()
    for _ in workers:
        total.add(results.get(timeout=900))
    for worker in workers:
        worker.join()
    total.peak_gpu_gb = round(total.peak_gpu_gb, 2)
    return total
