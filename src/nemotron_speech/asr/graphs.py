"""CUDA-graph replay of the encoder's streaming step at fixed batch-size buckets.

A stock eager step at batch 1 is almost all kernel-launch and Python overhead; replaying a captured
graph removes it. Graphs need fixed shapes, so each bucket (1, 2, 4, ... streams) is captured once,
on first use, with static input and cache tensors; a batch is padded up to its bucket. Only later
steps (`pre_encode_cache + chunk` frames, fixed drop) are graphed: a stream's first step has
another shape and runs eagerly, once per utterance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nemotron_speech.asr.slots import ENCODER_CACHES, SlotStore


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    signal: torch.Tensor
    lengths: torch.Tensor
    channel: torch.Tensor
    time: torch.Tensor
    channel_len: torch.Tensor
    outputs: tuple[torch.Tensor, ...]


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
    ):
        self._encoder = encoder
        self._slots = slots
        self._features = features
        self.frames = frames
        self._drop = drop
        self._buckets = [1 << n for n in range(max_bucket.bit_length()) if 1 << n <= max_bucket]
        self._captured: dict[int, _Captured] = {}
        self._pool = torch.cuda.graph_pool_handle()

    @property
    def max_batch(self) -> int:
        return self._buckets[-1]

    def __call__(self, signal: torch.Tensor, lengths: torch.Tensor, slots: torch.Tensor):
        """Run `signal` [B, features, <= frames] for the streams in cache `slots`; update their
        caches in place and return (encoded, encoded_len) for the B real rows."""
        batch, _, frames = signal.shape
        bucket = next(size for size in self._buckets if size >= batch)
        captured = self._captured.get(bucket) or self._capture(bucket)
        captured.signal[:batch, :, :frames].copy_(signal)
        if frames < self.frames:
            captured.signal[:batch, :, frames:].zero_()
        captured.lengths[:batch].copy_(lengths)
        channel, time, channel_len = self._slots.gather(ENCODER_CACHES, slots)
        captured.channel[:, :batch].copy_(channel)
        captured.time[:, :batch].copy_(time)
        captured.channel_len[:batch].copy_(channel_len)
        captured.graph.replay()
        encoded, encoded_len, next_channel, next_time, next_len = captured.outputs
        self._slots.scatter(
            ENCODER_CACHES, slots, (next_channel[:, :batch], next_time[:, :batch], next_len[:batch])
        )
        return encoded[:batch], encoded_len[:batch]

    def capture_all(self) -> None:
        """Capture every bucket now (a capture takes a few steps' time)."""
        for bucket in self._buckets:
            if bucket not in self._captured:
                self._capture(bucket)

    def _capture(self, bucket: int) -> _Captured:
        dtype = next(self._encoder.parameters()).dtype
        device = next(self._encoder.parameters()).device
        channel, time, channel_len = self._encoder.get_initial_cache_state(
            batch_size=bucket, dtype=dtype, device=device
        )
        signal = torch.zeros(bucket, self._features, self.frames, dtype=dtype, device=device)
        lengths = torch.full((bucket,), self.frames, dtype=torch.long, device=device)

        def step():
            return self._encoder.cache_aware_stream_step(
                processed_signal=signal,
                processed_signal_length=lengths,
                cache_last_channel=channel,
                cache_last_time=time,
                cache_last_channel_len=channel_len,
                keep_all_outputs=False,
                drop_extra_pre_encoded=self._drop,
            )

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):  # lazy buffers (positional encodings, workspaces) before capture
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool), torch.inference_mode():
            outputs = step()
        captured = _Captured(graph, signal, lengths, channel, time, channel_len, tuple(outputs))
        self._captured[bucket] = captured
        return captured
