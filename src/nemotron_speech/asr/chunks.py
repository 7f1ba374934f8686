"""A step's chunks cut on the device from its one batch of log-mel, history kept in slots.

Every row of the step's log-mel holds its stream's new frames at the same columns (see
`features`), so the new frames of a group of streams are one slice and one row selection. A later
chunk prepends `pre_encode_cache` frames of history, which live in a slot tensor: one gather and
one scatter per step instead of a host array per stream.
"""

from __future__ import annotations

import torch

from nemotron_speech.asr.features import LEAD_FRAMES
from nemotron_speech.asr.model import ChunkGeometry
from nemotron_speech.asr.slots import SlotStore
from nemotron_speech.asr.transfer import to_device

HISTORY = "feature_history"


class ChunkCutter:
    """Model inputs of a group of streams from the step's features and their slots' history."""

    def __init__(self, store: SlotStore, features: int, geometry: ChunkGeometry):
        # zeros: a history shorter than the cache is zero-filled on the left, as NeMo's buffer
        store.add(HISTORY, torch.zeros(1, features, geometry.pre_encode_cache), dim=0)
        self._store = store
        self._geometry = geometry

    def __call__(
        self,
        features: torch.Tensor,
        rows: list[int],
        counts: list[int],
        slots: torch.Tensor,
        is_first: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(signal, lengths, drop) for the streams in `rows` of `features` [B, features, frames],
        with `counts` new frames each; first chunks (`is_first`) take no history. Every stream's
        history moves on to its last `pre_encode_cache` frames."""
        device = features.device
        width = max(counts)
        new = features[:, :, LEAD_FRAMES : LEAD_FRAMES + width]
        if len(rows) < features.shape[0]:
            new = new.index_select(0, to_device(rows, device))
        if min(counts) < width:  # a reset's short last chunk: zeros past it, as when alone
            past = torch.arange(width, device=device) >= to_device(counts, device)[:, None]
            new = new.masked_fill(past[:, None, :], 0.0)
        (history,) = self._store.gather((HISTORY,), slots)
        inputs = torch.cat([history, new], dim=2)
        kept = self._geometry.pre_encode_cache
        self._store.scatter((HISTORY,), slots, (inputs.narrow(2, inputs.shape[2] - kept, kept),))
        if is_first:
            return new, to_device(counts, device), 0
        lengths = to_device([kept + count for count in counts], device)
        return inputs, lengths, self._geometry.drop_extra_pre_encoded
