"""CUDA-graph replay of a streaming step (encoder and greedy decode) at fixed batch-size buckets.

A stock eager step at batch 1 is almost all kernel-launch and Python overhead; replaying a captured
graph removes it. Graphs need fixed shapes, so each bucket (1, 2, 4, ... streams, and the largest
batch itself when that is no power of two) is captured once and a batch is padded up to its
bucket. Later steps (`pre_encode_cache + chunk` frames, fixed drop) and first steps
(`first_chunk` frames, no drop) get one instance each. The decode is in the same graph: its
rounds are a fixed set of operations (`decoding`), so a step is one replay and one read of labels.

Every bucket's graph of an instance reads its inputs from, and writes the streams' next state
(encoder caches and decoder state) back into, the leading rows of the instance's one set of
static tensors, sized for its largest bucket: a batch's state is gathered from slot storage
straight into them and scattered back from them, and no bucket holds state buffers of its own
(they would add up to twice the largest batch's caches). The first-step instance has a smaller
largest bucket and its own set, since it may run on a CUDA stream of its own (`stream`), beside
the later-step instance: its static rows add a quarter of the later ones' memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nemotron_speech.asr.decoding import DECODER_STATE, SlotGreedyDecoder
from nemotron_speech.asr.slots import ENCODER_CACHES, SlotStore

STATE = ENCODER_CACHES + DECODER_STATE  # a stream's state that a step reads and replaces


def first_step_bucket(max_batch: int) -> int:
    """The largest first-step graph: a step's first chunks are the streams just opened or
    reset, a few (each utterance, where a client resets after each); more run in several
    replays."""
    return max(1, max_batch // 4)


def graphed_steps(encoder, decoder, slots, features: int, geometry, max_batch: int) -> dict:
    """CUDA-graph steps for later chunks and for first chunks, keyed by `is_first`."""
    common = {"encoder": encoder, "decoder": decoder, "slots": slots, "features": features}
    later = GraphedStep(
        frames=geometry.pre_encode_cache + geometry.chunk,
        drop=geometry.drop_extra_pre_encoded,
        max_bucket=max_batch,
        **common,
    )
    # first chunks run beside the later ones, on a stream and static rows of their own: a
    # step's few first chunks would otherwise add a small, launch-bound replay to its time
    device = next(encoder.parameters()).device
    first = GraphedStep(
        frames=geometry.first_chunk,
        drop=0,
        max_bucket=first_step_bucket(max_batch),
        stream=torch.cuda.Stream(device),
        **common,
    )
    return {False: later, True: first}


def graph_buckets(max_bucket: int) -> list[int]:
    """Batch sizes to capture: powers of two below `max_bucket`, then `max_bucket` itself."""
    powers = (1 << n for n in range(max_bucket.bit_length()))
    return [size for size in powers if size < max_bucket] + [max_bucket]


@dataclass
class _Static:
    """Graph inputs for `max_bucket` rows; the streams' next state is written back in place.
    Rows past a batch hold stale values: rows are independent, and their outputs are dropped."""

    signal: torch.Tensor
    lengths: torch.Tensor
    state: tuple[torch.Tensor, ...]  # one per `STATE` name, slot dimension at `dims`
    dims: tuple[int, ...]

    def rows(self, count: int):
        """Views of the first `count` rows: (signal, lengths, state)."""
        state = tuple(t.narrow(dim, 0, count) for t, dim in zip(self.state, self.dims, strict=True))
        return self.signal[:count], self.lengths[:count], state


class GraphedStep:
    """`encoder.cache_aware_stream_step` and the greedy decode of its output, replayed from
    per-bucket CUDA graphs."""

    def __init__(
        self,
        encoder,
        decoder: SlotGreedyDecoder,
        slots: SlotStore,
        features: int,
        frames: int,
        drop: int,
        max_bucket: int = 1024,
        stream: torch.cuda.Stream | None = None,
    ):
        """`stream`: run on this CUDA stream, beside the caller's (`join` before reading)."""
        self._encoder = encoder
        self._decoder = decoder
        self._slots = slots
        self.frames = frames
        self._drop = drop
        self._buckets = graph_buckets(max_bucket)
        dtype = next(encoder.parameters()).dtype
        device = next(encoder.parameters()).device
        state, dims = slots.fresh(STATE, self.max_batch)
        self._static = _Static(
            signal=torch.zeros(self.max_batch, features, frames, dtype=dtype, device=device),
            lengths=torch.full((self.max_batch,), frames, dtype=torch.long, device=device),
            state=tuple(state),
            dims=tuple(dims),
        )
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle()
        self._stream = stream
        # captured (and warmed up) on a stream of its own: cuBLAS keeps a workspace per stream,
        # and a graph replays the one it was captured with (two graphs captured on torch's
        # shared capture stream would share one, and corrupt each other side by side). torch
        # hands out streams from a pool of 32, round robin: the engine draws its instances'
        # streams one after the other, so they differ.
        self._capture_stream = torch.cuda.Stream(device)

    @property
    def max_batch(self) -> int:
        return self._buckets[-1]

    def __call__(self, signal: torch.Tensor, lengths: torch.Tensor, slots: torch.Tensor):
        """Run `signal` [B, features, <= frames] for the streams in `slots`; update their
        state in place and return the decoder's labels for the B real rows (a copy: a step may
        replay one bucket twice before it reads them)."""
        if self._stream is None:
            return self._replay(signal, lengths, slots)
        caller = torch.cuda.current_stream(signal.device)
        self._stream.wait_stream(caller)
        for tensor in (signal, lengths, slots):  # the caller's memory, read on our stream
            tensor.record_stream(self._stream)
        with torch.cuda.stream(self._stream):
            labels = self._replay(signal, lengths, slots)
        labels.record_stream(caller)  # our memory, read on the caller's stream after `join`
        return labels

    def join(self) -> None:
        """Make the caller's stream wait for what this instance's stream has run."""
        if self._stream is not None:
            torch.cuda.current_stream(self._stream.device).wait_stream(self._stream)

    def _replay(self, signal: torch.Tensor, lengths: torch.Tensor, slots: torch.Tensor):
        batch, _, frames = signal.shape
        bucket = next(size for size in self._buckets if size >= batch)
        graph, labels = self._graphs.get(bucket) or self._capture(bucket)
        static_signal, static_lengths, state = self._static.rows(batch)
        static_signal[:, :, :frames].copy_(signal)
        if frames < self.frames:
            static_signal[:, :, frames:].zero_()
        static_lengths.copy_(lengths)
        self._slots.gather(STATE, slots, out=state)
        graph.replay()
        self._slots.scatter(STATE, slots, state)
        return labels[:batch].clone()  # the next replay of this bucket overwrites them

    def capture_all(self) -> None:
        """Capture every bucket now (a capture takes a few steps' time)."""
        for bucket in self._buckets:
            if bucket not in self._graphs:
                self._capture(bucket)

    def _capture(self, bucket: int):
        signal, lengths, state = self._static.rows(bucket)
        caches, decoder_state = state[: len(ENCODER_CACHES)], list(state[len(ENCODER_CACHES) :])

        def step():
            encoded, encoded_len, *next_caches = self._encoder.cache_aware_stream_step(
                processed_signal=signal,
                processed_signal_length=lengths,
                cache_last_channel=caches[0],
                cache_last_time=caches[1],
                cache_last_channel_len=caches[2],
                keep_all_outputs=False,
                drop_extra_pre_encoded=self._drop,
            )
            for cache, next_cache in zip(caches, next_caches, strict=True):
                cache.copy_(next_cache)  # after every layer has read the old caches
            return self._decoder.decode(encoded.float(), encoded_len, decoder_state)

        side = self._capture_stream
        side.wait_stream(torch.cuda.current_stream(signal.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):  # lazy buffers (positional encodings, workspaces) before capture
                step()
        torch.cuda.current_stream(signal.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        capture = torch.cuda.graph(graph, pool=self._pool, stream=self._capture_stream)
        with capture, torch.inference_mode():
            labels = step()
        self._graphs[bucket] = (graph, labels)
        return self._graphs[bucket]
