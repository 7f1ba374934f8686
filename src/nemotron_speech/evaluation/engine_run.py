"""Decoding an evaluation set with `AsrEngine` in this process (needs the `asr` extra).

Streaming goes through the engine's public API as the server drives it: PCM16 fed in 20 ms
packets, batched `step()`s over up to `streams` utterances at once, a reset
(`finalize(stream, reset=True)`) when an utterance's audio is all in. Offline decoding is
`transcribe_offline()` of an fp32 engine at the same right context, the reference that fp32
streaming equals token for token.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from nemotron_speech.asr import AsrEngine
from nemotron_speech.evaluation.dataset import PACKET_BYTES, Utterance, pcm16, read_samples
from nemotron_speech.evaluation.report import Decoded, Run, progress


@dataclass
class _Feeding:
    index: int
    pcm: bytes
    offset: int = 0


def run_model(
    model: str,
    utterances: Sequence[Utterance],
    right_contexts: Sequence[int],
    precisions: Sequence[str],
    device: str,
    streams: int,
    offline: bool,
) -> Iterator[Run]:
    """One `Run` per (right context, precision); each right context's offline decoding is done
    once and shared by its precisions."""
    for right_context in right_contexts:
        reference = offline_reference(model, utterances, right_context, device) if offline else None
        for precision in precisions:
            engine = _load(model, right_context, device, precision, streams)
            label = f"R={right_context} {precision}"
            decoded, seconds = stream_set(engine, utterances, streams, label)
            yield Run(
                "engine", right_context, engine.chunk_ms, precision, decoded, seconds, reference
            )
            del engine
            gc.collect()  # one model at a time in (GPU) memory


def offline_reference(
    model: str, utterances: Sequence[Utterance], right_context: int, device: str
) -> list[Decoded]:
    """Whole-utterance decoding at `right_context` by NeMo's own fp32 forward (no CUDA graphs,
    no fast layers): the reference every streaming configuration is compared with."""
    engine = AsrEngine.load(
        model, right_context=right_context, device=device, cuda_graphs=False, fast_layers=False
    )
    results = []
    with progress(len(utterances), f"R={right_context} fp32 offline") as bar:
        for utterance in utterances:
            tokens, text = engine.transcribe_offline(read_samples(utterance))
            results.append(Decoded(text, tuple(tokens)))
            bar.update()
    return results


def supported_right_contexts(model: str) -> list[int]:
    return AsrEngine.load(model).supported_right_contexts


def stream_set(
    engine: AsrEngine, utterances: Sequence[Utterance], streams: int, label: str
) -> tuple[list[Decoded], float]:
    """Stream every utterance, up to `streams` at a time; returns the finals in order and the
    seconds spent streaming (reading audio files excluded)."""
    pending = deque(enumerate(utterances))
    feeding: dict[int, _Feeding] = {}
    results: list[Decoded | None] = [None] * len(utterances)
    reading = 0.0
    started = time.perf_counter()
    with progress(len(utterances), f"{label} streaming") as bar:
        while pending or feeding:
            while pending and len(feeding) < streams:
                index, utterance = pending.popleft()
                read_started = time.perf_counter()
                audio = pcm16(read_samples(utterance))
                reading += time.perf_counter() - read_started
                feeding[engine.open_stream()] = _Feeding(index, audio)
            for stream_id, feed in list(feeding.items()):
                while not engine.has_chunk(stream_id) and feed.offset < len(feed.pcm):
                    engine.feed(stream_id, feed.pcm[feed.offset : feed.offset + PACKET_BYTES])
                    feed.offset += PACKET_BYTES
                if not engine.has_chunk(stream_id):  # all audio in and no full chunk left
                    results[feed.index] = _finalize(engine, stream_id)
                    del feeding[stream_id]
                    bar.update()
            engine.step()
    return results, time.perf_counter() - started - reading


def _finalize(engine: AsrEngine, stream_id: int) -> Decoded:
    started = time.perf_counter()
    final = engine.finalize(stream_id, reset=True)
    seconds = time.perf_counter() - started
    engine.close(stream_id)
    return Decoded(final.text, tuple(final.token_ids), seconds)


def _load(model: str, right_context: int, device: str, precision: str, streams: int) -> AsrEngine:
    """An engine warmed up outside the timed runs (first calls and CUDA-graph capture), its
    graphs sized for the streams the run keeps open."""
    engine = AsrEngine.load(
        model,
        right_context=right_context,
        device=device,
        precision=precision,
        max_graph_batch=streams,
    )
    engine.warmup()
    return engine
