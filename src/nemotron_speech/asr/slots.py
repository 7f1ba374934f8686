"""Encoder caches of all streams in preallocated slot tensors.

A batch gathers its streams' caches with one `index_select` per tensor and writes them back with
one `index_copy_`, instead of concatenating per-stream tensors: no per-stream copies in the hot
path, and fixed storage that later CUDA-graph work can address.
"""

from __future__ import annotations

import torch


class CacheSlots:
    """`cache_last_channel` [layers, slots, left, d_model], `cache_last_time`
    [layers, slots, d_model, kernel-1] and `cache_last_channel_len` [slots], grown by doubling."""

    def __init__(self, encoder, device: torch.device, capacity: int = 8):
        self._encoder = encoder
        self._device = device
        self._free: list[int] = []
        self._capacity = 0
        self.channel, self.time, self.channel_len = self._zeros(0)
        self._grow(capacity)

    def _zeros(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = next(self._encoder.parameters()).dtype
        return self._encoder.get_initial_cache_state(
            batch_size=count, dtype=dtype, device=self._device
        )

    def _grow(self, capacity: int) -> None:
        extra = self._zeros(capacity - self._capacity)
        self.channel = torch.cat([self.channel, extra[0]], dim=1)
        self.time = torch.cat([self.time, extra[1]], dim=1)
        self.channel_len = torch.cat([self.channel_len, extra[2]], dim=0)
        self._free.extend(range(capacity - 1, self._capacity - 1, -1))
        self._capacity = capacity

    def acquire(self) -> int:
        """A zeroed slot for a new stream."""
        if not self._free:
            self._grow(max(8, 2 * self._capacity))
        slot = self._free.pop()
        self.clear(slot)
        return slot

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def clear(self, slot: int) -> None:
        self.channel[:, slot].zero_()
        self.time[:, slot].zero_()
        self.channel_len[slot] = 0

    def gather(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            self.channel.index_select(1, slots),
            self.time.index_select(1, slots),
            self.channel_len.index_select(0, slots),
        )

    def scatter(
        self,
        slots: torch.Tensor,
        channel: torch.Tensor,
        time: torch.Tensor,
        channel_len: torch.Tensor,
    ) -> None:
        self.channel.index_copy_(1, slots, channel.to(self.channel.dtype))
        self.time.index_copy_(1, slots, time.to(self.time.dtype))
        self.channel_len.index_copy_(0, slots, channel_len.to(self.channel_len.dtype))
