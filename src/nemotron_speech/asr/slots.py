"""Per-stream model state in preallocated slot tensors.

Every stream owns one slot: its encoder caches and its RNNT decoder state sit at that index of a
few large tensors. A batch gathers its streams' state with one `index_select` per tensor and
writes it back with one `index_copy_`: no per-stream tensors or Python loops in the hot path, and
fixed storage that CUDA graphs can address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nemotron_speech.asr.transfer import to_device


@dataclass
class _Field:
    tensor: torch.Tensor
    dim: int  # the slot dimension
    fresh: torch.Tensor  # one slot's initial value (size 1 along `dim`)


class SlotStore:
    """Named state tensors sharing one slot index space, grown by doubling."""

    def __init__(self, device: torch.device):
        self._device = device
        self._fields: dict[str, _Field] = {}
        self._free: list[int] = []
        self._capacity = 0
        self._cleared: list[int] = []  # slots to set fresh before their state is next used

    def add(self, name: str, fresh: torch.Tensor, dim: int) -> None:
        """Register state whose value for a new stream is `fresh` (size 1 along `dim`); call
        before the first `acquire()`."""
        if self._capacity:
            raise RuntimeError("register every field before the first stream")
        fresh = fresh.to(self._device)
        self._fields[name] = _Field(fresh[(slice(None),) * dim + (slice(0, 0),)], dim, fresh)

    def acquire(self) -> int:
        """A slot holding fresh state for a new stream."""
        if not self._free:
            self._grow(max(8, 2 * self._capacity))
        slot = self._free.pop()
        self.clear(slot)
        return slot

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def clear(self, slot: int) -> None:
        """Back to fresh state (a stream that finished an utterance, or a new one). Done when
        state is next gathered or scattered: one copy per field for every slot cleared since,
        not one per slot (hundreds of streams end an utterance each second)."""
        self._cleared.append(slot)

    def _apply_clears(self) -> None:
        if not self._cleared:
            return
        slots = to_device(self._cleared, self._device)
        for field in self._fields.values():
            sizes = [-1] * field.fresh.dim()
            sizes[field.dim] = len(self._cleared)
            field.tensor.index_copy_(field.dim, slots, field.fresh.expand(*sizes))
        self._cleared = []

    def fresh(self, names: tuple[str, ...], count: int) -> tuple[list[torch.Tensor], list[int]]:
        """`count` fresh states of each field (new tensors), and each field's slot dimension."""
        fields = [self._fields[name] for name in names]
        tensors = [f.fresh.repeat_interleave(count, dim=f.dim) for f in fields]
        return tensors, [field.dim for field in fields]

    def gather(
        self, names: tuple[str, ...], slots: torch.Tensor, out: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """The `slots`' state of each field, into new tensors or into `out` (one per name)."""
        self._apply_clears()
        fields = [self._fields[name] for name in names]
        if out is None:
            return [field.tensor.index_select(field.dim, slots) for field in fields]
        for field, target in zip(fields, out, strict=True):
            torch.index_select(field.tensor, field.dim, slots, out=target)
        return list(out)

    def scatter(self, names: tuple[str, ...], slots: torch.Tensor, values) -> None:
        self._apply_clears()
        for name, value in zip(names, values, strict=True):
            field = self._fields[name]
            field.tensor.index_copy_(field.dim, slots, value.to(field.tensor.dtype))

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity
        for field in self._fields.values():
            sizes = [-1] * field.fresh.dim()
            sizes[field.dim] = extra
            field.tensor = torch.cat([field.tensor, field.fresh.expand(*sizes)], dim=field.dim)
        self._free.extend(range(capacity - 1, self._capacity - 1, -1))
        self._capacity = capacity


ENCODER_CACHES = ("cache_last_channel", "cache_last_time", "cache_last_channel_len")


def add_encoder_caches(store: SlotStore, encoder) -> None:
    """Cache-aware encoder state: [layers, slots, left, d_model], [layers, slots, d_model,
    kernel - 1] and [slots] lengths, zero for a new stream."""
    dtype = next(encoder.parameters()).dtype
    fresh = encoder.get_initial_cache_state(batch_size=1, dtype=dtype, device=store._device)
    for name, value, dim in zip(ENCODER_CACHES, fresh, (1, 1, 0), strict=True):
        store.add(name, value, dim)
