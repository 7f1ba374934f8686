"""CUDA-graph replay of the encoder's streaming step at fixed batch-size buckets.

A stock eager step at batch 1 is almost all kernel-launch and Python overhead; replaying a captured
graph removes it. Graphs need fixed shapes, so each bucket (1, 2, 4, ... streams, and the largest
batch itself when that is no power of two) is captured once and a batch is padded up to its
bucket. Later steps (`pre_encode_cache + chunk` frames, fixed drop) and first steps
(`first_chunk` frames, no drop) get one instance each.

Every bucket's graph reads its inputs from, and writes its next caches back into, the leading
rows of one set of static tensors sized for the largest bucket (the cache tensors are shared by
both instances): a batch's caches are gathered from slot storage straight into them and
scattered back from them, and no bucket holds cache buffers of its own (they would add up to
twice the largest batch's caches).

`after_capture` lets the engine have other graphs captured again after each of ours: NeMo's
CUDA-graph RNNT decoder, captured before our buckets, hit an illegal memory access at its next
replay (observed on an H200; a capture empties torch's allocator cache, so that graph read
memory no live tensor held: which, is not established).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from nemotron_speech.asr.slots import ENCODER_CACHES, SlotStore


def graph_buckets(max_bucket: int) -> list[int]:
    """Batch sizes to capture: powers of two below `max_bucket`, then `max_bucket` itself."""
    powers = (1 << n for n in range(max_bucket.bit_length()))
    return [size for size in powers if size < max_bucket] + [max_bucket]


@dataclass
class _Static:
    """Graph inputs for `max_bucket` rows; the encoder's next caches are written back in place.
    Rows past a batch hold stale values: rows are independent, and their outputs are dropped."""

    signal: torch.Tensor
    lengths: torch.Tensor
    caches: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # channel, time, channel_len

    def rows(self, count: int):
        """Views of the first `count` rows: (signal, lengths, caches)."""
        channel, time, channel_len = self.caches
        caches = (channel[:, :count], time[:, :count], channel_len[:count])
        return self.signal[:count], self.lengths[:count], caches


class GraphedEncoderStep:
    """`encoder.cache_aware_stream_step` for later steps, replayed from per-bucket CUDA graphs."""

    def __init__(
        self,
        encoder,
        slots: SlotStore,
        features: int,
        frames: int,
        drop: int,
        max_bucket: int = 1024,
        caches: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        after_capture: Callable[[], None] | None = None,
    ):
        """`caches`: another instance's static caches (same `max_bucket`) to share;
        `after_capture`: called after each bucket's capture."""
        self._encoder = encoder
        self._slots = slots
        self.frames = frames
        self._drop = drop
        self._buckets = graph_buckets(max_bucket)
        dtype = next(encoder.parameters()).dtype
        device = next(encoder.parameters()).device
        if caches is None:
            caches = encoder.get_initial_cache_state(
                batch_size=self.max_batch, dtype=dtype, device=device
            )
        self._static = _Static(
            signal=torch.zeros(self.max_batch, features, frames, dtype=dtype, device=device),
            lengths=torch.full((self.max_batch,), frames, dtype=torch.long, device=device),
            caches=tuple(caches),
        )
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]]] = {}
        self._pool = torch.cuda.graph_pool_handle()
        self._after_capture = after_capture

    @property
    def max_batch(self) -> int:
        return self._buckets[-1]

    @property
    def caches(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._static.caches

    def __call__(self, signal: torch.Tensor, lengths: torch.Tensor, slots: torch.Tensor):
        """Run `signal` [B, features, <= frames] for the streams in cache `slots`; update their
        caches in place and return (encoded, encoded_len) for the B real rows."""
        batch, _, frames = signal.shape
        bucket = next(size for size in self._buckets if size >= batch)
        graph, (encoded, encoded_len) = self._graphs.get(bucket) or self._capture(bucket)
        static_signal, static_lengths, caches = self._static.rows(batch)
        static_signal[:, :, :frames].copy_(signal)
        if frames < self.frames:
            static_signal[:, :, frames:].zero_()
        static_lengths.copy_(lengths)
        self._slots.gather(ENCODER_CACHES, slots, out=caches)
        graph.replay()
        self._slots.scatter(ENCODER_CACHES, slots, caches)
        return encoded[:batch], encoded_len[:batch]

    def capture_all(self) -> None:
        """Capture every bucket now (a capture takes a few steps' time)."""
        for bucket in self._buckets:
            if bucket not in self._graphs:
                self._capture(bucket)

    def _capture(self, bucket: int):
        signal, lengths, caches = self._static.rows(bucket)

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
            return encoded, encoded_len

        side = torch.cuda.Stream(signal.device)
        side.wait_stream(torch.cuda.current_stream(signal.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):  # lazy buffers (positional encodings, workspaces) before capture
                step()
        torch.cuda.current_stream(signal.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool), torch.inference_mode():
            outputs = step()
        self._graphs[bucket] = (graph, outputs)
        if self._after_capture is not None:
            self._after_capture()
        return self._graphs[bucket]
