"""Exact incremental log-mel: features computed once per new audio, equal to whole-utterance ones.

NeMo's preprocessor uses a centred STFT (zero padding of half a window), preemphasis and no
normalisation for streaming models. Mel frame t covers samples [t*hop - win/2, t*hop + win/2), so
it is final once that much audio has arrived. Each stream re-runs the preprocessor on a short tail
that starts two hops before its first missing frame, which keeps the segment's own padding and
preemphasis start away from every frame it emits. The tails of all streams in a step go through
the preprocessor as one batch; the features then live on the host, where cutting chunks costs
no device launches.
"""

from __future__ import annotations

import numpy as np
import torch


class MelFrontEnd:
    """The model's mel preprocessor over a batch of audio segments of any lengths."""

    def __init__(self, preprocessor: torch.nn.Module, device: torch.device):
        self._preprocessor = preprocessor
        self._device = device

    @torch.inference_mode()
    def __call__(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        """Log-mel [features, frames] of each segment; frames past a segment's end are padding."""
        lengths = [len(segment) for segment in segments]
        batch = np.zeros((len(segments), max(lengths)), dtype=np.float32)
        for row, segment in enumerate(segments):
            batch[row, : len(segment)] = segment
        features, _ = self._preprocessor(
            input_signal=torch.from_numpy(batch).to(self._device),
            length=torch.tensor(lengths, device=self._device),
        )
        host = features.float().cpu().numpy()
        return [host[row] for row in range(len(segments))]


class IncrementalLogMel:
    """One stream's bookkeeping: which audio tail to featurize next and which frames it yields."""

    def __init__(self, hop: int, window: int):
        self._hop = hop
        self._window = window
        self.reset()

    def reset(self) -> None:
        self._audio = np.zeros(0, dtype=np.float32)
        self._base = 0  # absolute index of self._audio[0]
        self._segment_start = 0  # first frame of the planned segment
        self._planned_end = 0
        self.frames_emitted = 0
        self.samples_seen = 0

    def frames_available(self, total_samples: int, final: bool) -> int:
        """Mel frames that can be emitted once `total_samples` samples have arrived.

        At the end of a stream NeMo reports `len // hop` valid frames (the STFT yields one more,
        which it masks), so a final push emits exactly that many.
        """
        if final:
            return total_samples // self._hop
        if total_samples < self._window // 2:
            return 0
        return (total_samples - self._window // 2) // self._hop + 1

    def plan(self, samples: np.ndarray, final: bool) -> np.ndarray | None:
        """Add audio; return the segment to featurize for the newly final frames, if any."""
        self._audio = np.concatenate([self._audio, samples]) if len(self._audio) else samples
        self.samples_seen += len(samples)
        self._planned_end = self.frames_available(self.samples_seen, final)
        if self._planned_end <= self.frames_emitted:
            return None
        self._segment_start = max(0, self.frames_emitted - 2)
        return self._audio[self._segment_start * self._hop - self._base :]

    def accept(self, segment_features: np.ndarray) -> np.ndarray:
        """Take the planned frames out of the segment's features; drop audio no longer needed."""
        offset = self.frames_emitted - self._segment_start
        new = segment_features[:, offset : offset + self._planned_end - self.frames_emitted]
        self.frames_emitted = self._planned_end
        keep_from = max(0, (self.frames_emitted - 2) * self._hop)
        if keep_from > self._base:
            self._audio = self._audio[keep_from - self._base :]
            self._base = keep_from
        return new
