"""Exact incremental log-mel: each frame computed once, equal to the whole utterance's frame.

NeMo's preprocessor uses a centred STFT (zero padding of half a window), preemphasis and no
normalisation for streaming models. Mel frame t covers samples [t*hop - win/2, t*hop + win/2), so
it is final once that much audio has arrived. A stream featurizes exactly the frames of its next
chunk, from a segment that starts `LEAD_FRAMES` hops before the first of them: the segment's own
start (preemphasis, centre padding) then only touches frames that are dropped. A stream's first
segment is led by zeros instead, which is what the centre padding and preemphasis see at the
start of the utterance, so every row of a step's batch holds its new frames at the same columns
and a chunk is one slice of the batch, cut on the device.
"""

from __future__ import annotations

import numpy as np
import torch

LEAD_FRAMES = 2  # frames computed before the first new one: the segment start's effects end there


class MelFrontEnd:
    """The model's mel preprocessor over a batch of segments."""

    def __init__(self, preprocessor: torch.nn.Module, device: torch.device):
        self._preprocessor = preprocessor
        self._device = device

    @torch.inference_mode()
    def __call__(self, segments: list[tuple[int, np.ndarray]]) -> torch.Tensor:
        """Log-mel [segments, features, frames] on the device of (leading zeros, audio) segments
        from `IncrementalLogMel.segment`: a row's new frames start at column `LEAD_FRAMES`."""
        lengths = [lead + len(audio) for lead, audio in segments]
        batch = np.zeros((len(segments), max(lengths)), dtype=np.float32)
        for row, (lead, audio) in enumerate(segments):
            batch[row, lead : lead + len(audio)] = audio
        features, _ = self._preprocessor(
            input_signal=torch.from_numpy(batch).to(self._device),
            length=torch.tensor(lengths, device=self._device),
        )
        return features.float()


def pcm16_to_float(blobs: list[bytes]) -> list[np.ndarray]:
    """Little-endian PCM16 byte strings (even lengths) as float32 samples: one conversion for
    all of them rather than one per stream."""
    flat = np.frombuffer(b"".join(blobs), "<i2").astype(np.float32) / 32768.0
    ends = np.cumsum([len(blob) // 2 for blob in blobs]).tolist()
    return [flat[start:end] for start, end in zip([0, *ends], ends, strict=False)]


class IncrementalLogMel:
    """One stream's audio since the frames it still needs, and which segment yields its next
    frames."""

    def __init__(self, hop: int, window: int):
        self._hop = hop
        self._window = window
        self.reset()

    def reset(self) -> None:
        self._audio = np.zeros(0, dtype=np.float32)
        self._base = 0  # absolute index of self._audio[0], a multiple of hop
        self.frames_emitted = 0
        self.samples_seen = 0  # kept, not derived: readiness reads it for every stream, each step

    def add(self, samples: np.ndarray) -> None:
        self._audio = np.concatenate([self._audio, samples]) if len(self._audio) else samples
        self.samples_seen += len(samples)

    def frames_available(self, total_samples: int, final: bool) -> int:
        """Mel frames that can be emitted once `total_samples` samples have arrived.

        At the end of a stream NeMo reports `len // hop` valid frames (the STFT yields one more,
        which it masks), so a final segment emits exactly that many.
        """
        if final:
            return total_samples // self._hop
        if total_samples < self._window // 2:
            return 0
        return (total_samples - self._window // 2) // self._hop + 1

    def segment(self, count: int) -> tuple[int, np.ndarray]:
        """(leading zeros, audio) whose log-mel holds the next `count` frames from column
        `LEAD_FRAMES` on; call with at most `frames_available` - `frames_emitted` frames."""
        start = (self.frames_emitted - LEAD_FRAMES) * self._hop
        end = (self.frames_emitted + count - 1) * self._hop + self._window // 2
        begin = max(start, 0) - self._base
        return max(0, -start), self._audio[begin : min(end, self.samples_seen) - self._base]

    def advance(self, count: int) -> None:
        """The next `count` frames are taken; drop the audio no later frame needs."""
        self.frames_emitted += count
        keep_from = max(0, (self.frames_emitted - LEAD_FRAMES) * self._hop)
        if keep_from > self._base:
            self._audio = self._audio[keep_from - self._base :]
            self._base = keep_from
