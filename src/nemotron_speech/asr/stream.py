"""One stream's state: PCM assembly, incremental features and exact chunk cutting.

Exact chunking (what makes streaming equal offline): a stream's first step takes `first_chunk`
mel frames with no history and drops nothing; every later step takes `pre_encode_cache` frames of
history plus `chunk` new frames and drops `drop_extra_pre_encoded` encoder frames. At a reset the
remaining frames, however few, form the last chunk. A finalize that keeps context pads silence up
to a chunk boundary instead, so every chunk stays whole and the stream goes on as if the padding
had been part of the pause.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nemotron_speech.asr.errors import AudioFormatError
from nemotron_speech.asr.features import IncrementalLogMel
from nemotron_speech.asr.model import ChunkGeometry

FINALIZE_MARGIN = 2  # encoder frames (160 ms) of padding a finalize gives the decoder at least


@dataclass
class Chunk:
    """Model input for one step of one stream."""

    features: np.ndarray  # [features, frames]
    drop_extra_pre_encoded: int
    is_first: bool


class StreamState:
    """Everything one stream carries between steps, apart from its encoder caches (which live in
    the engine's slot tensors so a batch can gather them with one index operation)."""

    def __init__(self, stream_id: int, slot: int, geometry: ChunkGeometry):
        self.stream_id = stream_id
        self.slot = slot
        self._mel = IncrementalLogMel(geometry.hop_samples, geometry.window_samples)
        self._geometry = geometry
        self.reset()

    def reset(self) -> None:
        """Back to the start of an utterance (caches are reset by the engine)."""
        self._mel.reset()
        self._pcm = bytearray()  # PCM16 not yet converted; may end in an odd byte
        self._pending: list[np.ndarray] = []
        self._pending_converted = 0
        self._features = np.zeros((0, 0), dtype=np.float32)
        self._history = self._features
        self._frames_cut = 0
        self.steps = 0
        self._final_frame = 0  # a context-keeping finalize's final falls at this frame
        self.commit()

    def commit(self) -> None:
        """The next utterance starts; after a context-keeping final, caches and audio go on."""
        self.token_ids: list[int] = []
        self.reported_tokens = 0
        self.reported_text = ""
        self.finalizing = False  # a final is due once the audio up to the request is processed
        self.resetting = False  # ... and then the stream starts clean (the audio ends there)

    def add_pcm16(self, data: bytes) -> None:
        """Append little-endian PCM16 bytes. Conversion waits for `plan_features()`, once per
        step rather than once per packet; an odd trailing byte waits for the next packet."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise AudioFormatError(f"audio must be PCM16 bytes, got {type(data).__name__}")
        self._pcm += data

    def add_samples(self, samples: np.ndarray) -> None:
        self._convert_pcm()
        self._pending.append(np.asarray(samples, dtype=np.float32))
        self._pending_converted += len(samples)

    @property
    def pending_samples(self) -> int:
        return self._pending_converted + len(self._pcm) // 2

    def _convert_pcm(self) -> None:
        usable = len(self._pcm) - len(self._pcm) % 2
        if usable:
            # one expression: the view into the bytearray must be gone before it shrinks
            samples = np.frombuffer(self._pcm, "<i2", usable // 2).astype(np.float32) / 32768.0
            self._pending.append(samples)
            self._pending_converted += usable // 2
            del self._pcm[:usable]

    def begin_finalize(self, padding_samples: int, reset: bool) -> None:
        """Pad silence so the last words get their right context, and mark where the final is.

        A reset ends the audio after `padding_samples` (its last chunk may be short). Otherwise
        the padding is ordinary audio up to a chunk boundary (see `_chunk_boundary`), with the
        final due at that boundary; audio that arrives later follows the padding.
        """
        self._convert_pcm()
        self.finalizing, self.resetting = True, reset
        if reset:
            self._pcm.clear()  # a dangling odd byte is not a sample
            self.add_samples(np.zeros(padding_samples, dtype=np.float32))
            return
        geometry = self._geometry
        self._final_frame = self._chunk_boundary(self.total_samples // geometry.hop_samples)
        # samples for that frame to exist without ending the audio (its window's right half)
        needed = (self._final_frame - 1) * geometry.hop_samples + geometry.window_samples // 2
        self.add_samples(np.zeros(max(0, needed - self.total_samples), dtype=np.float32))

    def _chunk_boundary(self, frames: int) -> int:
        """The first chunk boundary at least `FINALIZE_MARGIN` encoder frames (or one chunk, if
        shorter) past `frames`, the frames of real audio. Attention never reaches past a chunk,
        so the padding only gives the decoder frames to emit the last tokens on; a whole chunk
        of it, as a reset pads, would cost up to 1.12 s of extra frames at right context 13."""
        geometry = self._geometry
        first, chunk = geometry.first_chunk, geometry.chunk
        per_encoder_frame = chunk // (geometry.right_context + 1)
        target = frames + min(chunk, FINALIZE_MARGIN * per_encoder_frame)
        return first if target <= first else first + -(-(target - first) // chunk) * chunk

    @property
    def total_samples(self) -> int:
        return self._mel.samples_seen + self.pending_samples

    def frames_ready(self) -> int:
        """Mel frames that exist (or could be computed now) but are not yet in a chunk."""
        return self._mel.frames_available(self.total_samples, self.resetting) - self._frames_cut

    def needs_final(self) -> bool:
        if not self.finalizing:
            return False
        return self.frames_ready() == 0 if self.resetting else self._frames_cut >= self._final_frame

    def has_chunk(self) -> bool:
        """A full chunk is ready, or, when resetting, any remainder."""
        ready = self.frames_ready()
        if self.steps == 0:
            need, least = self._geometry.first_chunk, self._geometry.min_first
        else:
            need, least = self._geometry.chunk, 1
        return ready >= need or (self.resetting and ready >= least)

    def plan_features(self) -> np.ndarray | None:
        """The audio segment whose log-mel holds this stream's new frames (None: nothing new)."""
        self._convert_pcm()
        if not self._pending:
            return None
        samples = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_converted = [], 0
        return self._mel.plan(samples, final=self.resetting)

    def accept_features(self, segment_features: np.ndarray) -> None:
        new = self._mel.accept(segment_features)
        self._features = (
            np.concatenate([self._features, new], axis=1) if self._features.size else new
        )

    def next_chunk(self) -> Chunk:
        """Cut the next model input; call only when `has_chunk()` and features are computed."""
        is_first = self.steps == 0
        geometry = self._geometry
        take = min(geometry.first_chunk if is_first else geometry.chunk, self._features.shape[1])
        new = self._features[:, :take]
        if is_first:
            chunk = Chunk(new, 0, True)
        else:
            inputs = np.concatenate([self._left_padded_history(new), new], axis=1)
            chunk = Chunk(inputs, geometry.drop_extra_pre_encoded, False)
        self._remember(new)
        self._features = self._features[:, take:]
        self._frames_cut += take
        self.steps += 1
        return chunk

    def _left_padded_history(self, new: np.ndarray) -> np.ndarray:
        """The pre-encode cache; zero-filled on the left while history is shorter (right context
        0 has a one-frame first chunk), as NeMo's streaming buffer does."""
        missing = self._geometry.pre_encode_cache - self._history.shape[1]
        if missing <= 0:
            return self._history
        padding = np.zeros((new.shape[0], missing), dtype=np.float32)
        return np.concatenate([padding, self._history], axis=1) if self._history.size else padding

    def _remember(self, new: np.ndarray) -> None:
        history = np.concatenate([self._history, new], axis=1) if self._history.size else new
        self._history = history[:, -self._geometry.pre_encode_cache :]
