"""Real-time simulation of many streams on one engine, or on several engine processes sharing a
GPU.

N streams send 20 ms packets at random phases; the loop steps whenever a chunk is ready; the lag
of a chunk is the end of the step that ran it minus the moment its audio was complete ("real
time" = p99 lag <= one chunk). Packet feeding runs on the engine's thread, as in a server's
inference process. With `processes` > 1 the streams are split over that many processes, each
with its own engine on the same GPU (one Python thread cannot prepare 1,000 streams' chunks in
time; processes run that host work in parallel while their GPU work interleaves).
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from nemotron_speech.asr import AsrEngine
from nemotron_speech.protocol import SAMPLE_RATE

PACKET_S = 0.02


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()


def real_time_lags(
    engine: AsrEngine, streams: int, audio: np.ndarray, seconds: float, settle: float, seed=0
) -> tuple[list[float], list[int]]:
    """Chunk lags (ms) of `streams` real-time streams, counting chunks complete after `settle`
    seconds (all streams start at once, so their first, eager steps coincide), and the batch
    size of every step after `settle`."""
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
    for stream in ids:
        engine.close(stream)
    return lags, batches


def _worker(model_path, options, seed, streams, audio, seconds, settle, barrier, results):
    torch.set_num_threads(1)
    engine = AsrEngine.load(model_path, max_buffered_seconds=300, **options)
    engine.warmup()
    barrier.wait()  # every process simulates over the same wall-clock window
    lags, batches = real_time_lags(engine, streams, audio, seconds, settle, seed)
    cuda = engine.device.type == "cuda"
    results.put((lags, batches, torch.cuda.max_memory_allocated() / 1e9 if cuda else 0.0))


def real_time_lags_in_processes(
    model_path: Path,
    options: dict,
    processes: int,
    streams: int,
    audio: np.ndarray,
    seconds: float,
    settle: float,
) -> tuple[list[float], list[int], float]:
    """`real_time_lags` over `processes` engine processes (loaded from `model_path` with
    `options`, which name the device) sharing `streams`; also their summed peak GPU memory in
    GB."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    shares = [streams // processes + (n < streams % processes) for n in range(processes)]
    options = {"max_graph_batch": max(shares), **options}
    workers = [
        context.Process(
            target=_worker,
            args=(model_path, options, n, share, audio, seconds, settle, barrier, results),
        )
        for n, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=900) for _ in workers]
    for worker in workers:
        worker.join()
    lags = [lag for outcome in outcomes for lag in outcome[0]]
    batches = [batch for outcome in outcomes for batch in outcome[1]]
    return lags, batches, round(sum(outcome[2] for outcome in outcomes), 2)
