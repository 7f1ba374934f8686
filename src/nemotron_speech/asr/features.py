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

from nemotron_speech.asr.transfer import to_device

LEAD_FRAMES = 2  # frames computed before the first new one: the segment start's effects end there
# Buffers hold audio in PCM16 units, so PCM converts with a plain cast; scaling by a power of two
# is exact both ways.
PCM_SCALE = 1 / 32768
BUFFER_SAMPLES = 8 * 1024  # a stream's audio buffer, at least: a few chunks of 160 ms


class MelFrontEnd:
    """The model's mel preprocessor over a batch of segments."""

    def __init__(self, preprocessor: torch.nn.Module, device: torch.device):
        self._preprocessor = preprocessor
        self._device = device

    @torch.inference_mode()
    def __call__(self, segments: list[tuple[int, np.ndarray]]) -> torch.Tensor:
        """Log-mel [segments, features, frames] on the device of (leading zeros, audio) segments
        from `IncrementalLogMel.segment`: a row's new frames start at column `LEAD_FRAMES`.
        Audio is in PCM16 units (samples times 32768), scaled back once for the whole batch."""
        lengths = [lead + len(audio) for lead, audio in segments]
        if lengths.count(lengths[0]) == len(lengths) and not any(lead for lead, _ in segments):
            batch = np.stack([audio for _, audio in segments])  # streams in step: one copy
        else:
            batch = np.zeros((len(segments), max(lengths)), dtype=np.float32)
            for row, (lead, audio) in enumerate(segments):
                batch[row, lead : lead + len(audio)] = audio
        signal = to_device(batch, self._device).mul_(PCM_SCALE)
        features, _ = self._preprocessor(
            input_signal=signal, length=to_device(lengths, self._device)
        )
        return features.float()


class IncrementalLogMel:
    """One stream's audio since the first sample its next frames need, in a buffer of its own
    (in PCM16 units, written in place, compacted when full), and which segment yields its next
    frames."""

    def __init__(self, hop: int, window: int):
        self._hop = hop
        self._window = window
        self.reset()

    def reset(self) -> None:
        self._buffer = np.zeros(BUFFER_SAMPLES, dtype=np.float32)
        self._origin = 0  # absolute index of self._buffer[0]
        self._start = 0  # buffer index of the first sample still needed, a multiple of hop
        self.frames_emitted = 0
        self.samples_seen = 0  # kept, not derived: readiness reads it for every stream, each step

    def add(self, samples: np.ndarray) -> None:
        """Add float samples (full scale 1)."""
        np.multiply(samples, np.float32(1 / PCM_SCALE), out=self._room(len(samples)))
        self.samples_seen += len(samples)

    def add_pcm16(self, data: bytes | bytearray) -> None:
        """Add little-endian PCM16 (whole samples), cast straight into the buffer."""
        pcm = np.frombuffer(data, "<i2")
        self._room(len(pcm))[:] = pcm
        self.samples_seen += len(pcm)

    def _room(self, count: int) -> np.ndarray:
        """The buffer's next `count` samples, after moving the kept audio to its front if they
        do not fit; a new buffer where that is still too small, or far too large (a backlog's
        buffer shrinks at the first compaction after it is processed)."""
        end = self.samples_seen - self._origin
        if end + count > len(self._buffer):
            kept = end - self._start
            size = max(BUFFER_SAMPLES, 2 * (kept + count))
            if size <= len(self._buffer) <= 4 * size:
                size = len(self._buffer)
            target = self._buffer if size == len(self._buffer) else np.zeros(size, np.float32)
            target[:kept] = self._buffer[self._start : end]
            self._buffer, self._origin, self._start = target, self._origin + self._start, 0
            end = kept
        return self._buffer[end : end + count]

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
        `LEAD_FRAMES` on; call with at most `frames_available` - `frames_emitted` frames. The
        audio is a view, valid until the next `add`."""
        start = (self.frames_emitted - LEAD_FRAMES) * self._hop
        end = min(
            self.samples_seen, (self.frames_emitted + count - 1) * self._hop + self._window // 2
        )
        return max(0, -start), self._buffer[max(start, 0) - self._origin : end - self._origin]

    def advance(self, count: int) -> None:
        """The next `count` frames are taken; the audio no later frame needs may go."""
        self.frames_emitted += count
        self._start = max(
            self._start, (self.frames_emitted - LEAD_FRAMES) * self._hop - self._origin
        )
