"""Exact incremental log-mel: features computed once per new audio, equal to whole-utterance ones.

NeMo's preprocessor uses a centred STFT (zero padding of half a window), preemphasis and no
normalisation for streaming models. Mel frame t covers samples [t*hop - win/2, t*hop + win/2), so
it is final once that much audio has arrived. Each call re-runs the preprocessor on a short tail
that starts two hops before the first missing frame, which keeps the segment's own padding and
preemphasis start away from every frame it emits.
"""

from __future__ import annotations

import numpy as np
import torch


class IncrementalLogMel:
    """Per-stream front end over a shared NeMo `AudioToMelSpectrogramPreprocessor`."""

    def __init__(self, preprocessor: torch.nn.Module, hop: int, window: int, device: torch.device):
        self._preprocessor = preprocessor
        self._hop = hop
        self._window = window
        self._device = device
        self.reset()

    def reset(self) -> None:
        self._audio = np.zeros(0, dtype=np.float32)
        self._base = 0  # absolute index of self._audio[0]
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

    @torch.inference_mode()
    def push(self, samples: np.ndarray, final: bool = False) -> torch.Tensor:
        """Add audio; return the newly final frames as a [features, n] tensor on the device."""
        self._audio = np.concatenate([self._audio, samples])
        self.samples_seen += len(samples)
        end = self.frames_available(self.samples_seen, final)
        if end <= self.frames_emitted:
            return torch.zeros(0, device=self._device)
        first = max(0, self.frames_emitted - 2)
        segment = self._audio[first * self._hop - self._base :]
        signal = torch.from_numpy(segment).to(self._device)[None]
        features, _ = self._preprocessor(
            input_signal=signal, length=torch.tensor([len(segment)], device=self._device)
        )
        offset = self.frames_emitted - first
        out = features[0, :, offset : offset + end - self.frames_emitted]
        self.frames_emitted = end
        keep_from = max(0, (end - 2) * self._hop)
        if keep_from > self._base:
            self._audio = self._audio[keep_from - self._base :]
            self._base = keep_from
        return out
