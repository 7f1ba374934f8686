"""One stream's state: PCM assembly, incremental features and exact chunk cutting.

Exact chunking (what makes streaming equal offline): a stream's first step takes `first_chunk`
mel frames with no history and drops nothing; every later step takes `pre_encode_cache` frames of
history plus `chunk` new frames and drops `drop_extra_pre_encoded` encoder frames. At the end of a
stream the remaining frames, however few, form the last chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nemotron_speech.asr.errors import AudioFormatError
from nemotron_speech.asr.features import IncrementalLogMel
from nemotron_speech.asr.model import ChunkGeometry


@dataclass
class Chunk:
    """Model input for one step of one stream."""

    features: torch.Tensor  # [features, frames]
    drop_extra_pre_encoded: int
    is_first: bool


class StreamState:
    """Everything one stream carries between steps, apart from its encoder caches (which live in
    the engine's slot tensors so a batch can gather them with one index operation)."""

    def __init__(self, stream_id: int, slot: int, mel: IncrementalLogMel, geometry: ChunkGeometry):
        self.stream_id = stream_id
        self.slot = slot
        self._mel = mel
        self._geometry = geometry
        self._odd_byte = b""
        self.reset()

    def reset(self) -> None:
        """Back to the start of an utterance (caches are reset by the engine)."""
        self._mel.reset()
        self._pending: list[np.ndarray] = []
        self.pending_samples = 0
        self._features = torch.zeros(0)
        self._history = torch.zeros(0)
        self._frames_cut = 0
        self.steps = 0
        self.hypothesis = None
        self.reported_text = ""
        self.finalizing = False

    def add_pcm16(self, data: bytes) -> int:
        """Append little-endian PCM16 bytes; an odd trailing byte waits for the next call."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise AudioFormatError(f"audio must be PCM16 bytes, got {type(data).__name__}")
        data = self._odd_byte + bytes(data)
        usable = len(data) - len(data) % 2
        self._odd_byte = data[usable:]
        if usable:
            samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
            self.add_samples(samples)
        return usable // 2

    def add_samples(self, samples: np.ndarray) -> None:
        self._pending.append(np.asarray(samples, dtype=np.float32))
        self.pending_samples += len(samples)

    def begin_finalize(self, padding_samples: int) -> None:
        """Pad silence so the last words get their right context, and mark the end of audio."""
        self._odd_byte = b""
        self.add_samples(np.zeros(padding_samples, dtype=np.float32))
        self.finalizing = True

    @property
    def total_samples(self) -> int:
        return self._mel.samples_seen + self.pending_samples

    def frames_ready(self) -> int:
        """Mel frames that exist (or could be computed now) but are not yet in a chunk."""
        return self._mel.frames_available(self.total_samples, self.finalizing) - self._frames_cut

    def needs_final(self) -> bool:
        return self.finalizing and self.frames_ready() == 0

    def has_chunk(self) -> bool:
        """A full chunk is ready, or, when finalizing, any remainder."""
        ready = self.frames_ready()
        need = self._geometry.first_chunk if self.steps == 0 else self._geometry.chunk
        return ready >= need or (self.finalizing and ready > 0)

    def next_chunk(self) -> Chunk | None:
        """Cut the next model input if a full chunk (or, finalizing, any remainder) is ready."""
        is_first = self.steps == 0
        geometry = self._geometry
        if not self.has_chunk() or (is_first and self.frames_ready() < geometry.min_first):
            return None
        need = geometry.first_chunk if is_first else geometry.chunk
        self._compute_features()
        take = min(need, self._features.shape[1])
        new = self._features[:, :take]
        if is_first:
            chunk = Chunk(new, 0, True)
        else:
            chunk = Chunk(
                torch.cat([self._left_padded_history(new), new], dim=1),
                geometry.drop_extra_pre_encoded,
                False,
            )
        self._remember(new)
        self._features = self._features[:, take:]
        self._frames_cut += take
        self.steps += 1
        return chunk

    def _compute_features(self) -> None:
        if self._pending:
            samples = np.concatenate(self._pending)
            self._pending, self.pending_samples = [], 0
            new = self._mel.push(samples, final=self.finalizing)
            if new.numel():
                parts = [self._features, new] if self._features.numel() else [new]
                self._features = torch.cat(parts, dim=1)

    def _left_padded_history(self, new: torch.Tensor) -> torch.Tensor:
        """The pre-encode cache; zero-filled on the left while history is shorter (right context
        0 has a one-frame first chunk), as NeMo's streaming buffer does."""
        size = self._geometry.pre_encode_cache
        history = self._history if self._history.numel() else new[:, :0]
        missing = size - history.shape[1]
        if missing > 0:
            history = torch.cat([new.new_zeros(new.shape[0], missing), history], dim=1)
        return history

    def _remember(self, new: torch.Tensor) -> None:
        history = torch.cat([self._history, new], dim=1) if self._history.numel() else new
        self._history = history[:, -self._geometry.pre_encode_cache :]
