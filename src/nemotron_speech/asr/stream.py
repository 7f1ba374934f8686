"""One stream's state: PCM assembly, incremental features and exact chunk planning.

Exact chunking (what makes streaming equal offline): a stream's first step takes `first_chunk`
mel frames with no history and drops nothing; every later step takes `pre_encode_cache` frames of
history plus `chunk` new frames and drops `drop_extra_pre_encoded` encoder frames. At a reset the
remaining frames, however few, form the last chunk. A finalize that keeps context pads silence up
to a chunk boundary instead, so every chunk stays whole and the stream goes on as if the padding
had been part of the pause. The engine cuts the chunks themselves, for all streams of a step at
once; a stream only says how many new frames its next chunk has and which audio holds them.
"""

from __future__ import annotations

import numpy as np

from nemotron_speech.asr.errors import AudioFormatError
from nemotron_speech.asr.features import IncrementalLogMel
from nemotron_speech.asr.model import ChunkGeometry

FINALIZE_MARGIN = 2  # encoder frames (160 ms) of padding a finalize gives the decoder at least


class StreamState:
    """Everything one stream carries between steps on the host; its encoder caches, decoder state
    and feature history live in the engine's slot tensors, so a batch gathers them by index."""

    def __init__(self, stream_id: int, slot: int, geometry: ChunkGeometry):
        self.stream_id = stream_id
        self.slot = slot
        self._mel = IncrementalLogMel(geometry.hop_samples, geometry.window_samples)
        self._geometry = geometry
        self.client_bytes = 0  # audio the client sent, over every utterance
        self.chunk_client_bytes: int | None = None  # see `advance`
        self.in_flight = 0  # launched steps with a chunk of this stream, not yet finished
        self.reset()

    def reset(self) -> None:
        """Back to the start of an utterance (slot state is reset by the engine)."""
        self._mel.reset()
        self._pcm = bytearray()  # PCM16 not yet converted; may end in an odd byte
        self._origin_bytes = self.client_bytes  # the client's audio before this utterance
        self._padding = 0  # samples of finalize padding among the features
        self.steps = 0
        self._final_frame = 0  # a context-keeping finalize's final falls at this frame
        self._next_chunk_at()
        self.commit()

    def commit(self) -> None:
        """The next utterance starts; after a context-keeping final, caches and audio go on."""
        self.token_ids: list[int] = []
        self.reported_tokens = 0
        self.reported_text = ""
        self.finalizing = False  # a final is due once the audio up to the request is processed
        self.resetting = False  # ... and then the stream starts clean (the audio ends there)

    def add_pcm16(self, data: bytes) -> None:
        """Append little-endian PCM16 bytes. Conversion waits for the step (`convert_pcm`),
        once per step rather than once per packet; an odd trailing byte waits for the next."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise AudioFormatError(f"audio must be PCM16 bytes, got {type(data).__name__}")
        self._pcm += data
        self.client_bytes += len(data)

    def add_samples(self, samples: np.ndarray) -> None:
        self.convert_pcm()  # PCM that came first goes first
        self._mel.add(np.asarray(samples, dtype=np.float32))

    def convert_pcm(self) -> None:
        """Move the whole samples of waiting PCM16 into the feature buffer."""
        if len(self._pcm) < 2:
            return
        data = self._pcm
        self._pcm = bytearray()
        if len(data) % 2:
            self._pcm.append(data.pop())
        self._mel.add_pcm16(data)

    @property
    def pending_samples(self) -> int:
        """Samples received whose frames are not yet in a chunk."""
        cut = self._mel.frames_emitted * self._geometry.hop_samples
        return max(0, self.total_samples - cut)

    def begin_finalize(self, padding_samples: int, reset: bool) -> None:
        """Pad silence so the last words get their right context, and mark where the final is.

        A reset ends the audio after `padding_samples` (its last chunk may be short). Otherwise
        the padding is ordinary audio up to a chunk boundary (see `_chunk_boundary`), with the
        final due at that boundary; audio that arrives later follows the padding.
        """
        self.convert_pcm()
        self.finalizing, self.resetting = True, reset
        if reset:
            self._pcm.clear()  # a dangling odd byte is not a sample
            self._pad(padding_samples)
            return
        geometry = self._geometry
        self._final_frame = self._chunk_boundary(self.total_samples // geometry.hop_samples)
        # samples for that frame to exist without ending the audio (its window's right half)
        needed = (self._final_frame - 1) * geometry.hop_samples + geometry.window_samples // 2
        self._pad(max(0, needed - self.total_samples))

    def _pad(self, samples: int) -> None:
        self.add_samples(np.zeros(samples, dtype=np.float32))
        self._padding += samples

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
        return self._mel.samples_seen + len(self._pcm) // 2

    def frames_ready(self) -> int:
        """Mel frames that exist (or could be computed now) but are not yet in a chunk."""
        return (
            self._mel.frames_available(self.total_samples, self.resetting)
            - self._mel.frames_emitted
        )

    def needs_final(self) -> bool:
        if not self.finalizing:
            return False
        return (
            self.frames_ready() == 0
            if self.resetting
            else self._mel.frames_emitted >= self._final_frame
        )

    def has_chunk(self) -> bool:
        """A full chunk is ready, or, when resetting, any remainder."""
        if self.resetting:
            return self.chunk_frames() > 0
        return self.total_samples >= self._ready_at

    def chunk_frames(self) -> int:
        """New frames in the next chunk: a full chunk, a reset's remainder, or 0 (none ready)."""
        if not self.resetting:  # the common case: two attribute reads, no frame arithmetic
            return self._need if self.total_samples >= self._ready_at else 0
        ready = self.frames_ready()
        least = self._geometry.min_first if self.steps == 0 else 1
        return min(self._need, ready) if ready >= least else 0

    def _next_chunk_at(self) -> None:
        """The frames of the next full chunk and the samples its last frame needs: the step
        scans every open stream, so readiness is one comparison."""
        geometry = self._geometry
        self._need = geometry.first_chunk if self.steps == 0 else geometry.chunk
        last = self._mel.frames_emitted + self._need - 1
        self._ready_at = last * geometry.hop_samples + geometry.window_samples // 2

    def segment(self, count: int) -> tuple[int, np.ndarray]:
        """(leading zeros, audio) whose log-mel holds the next `count` frames; see
        `IncrementalLogMel.segment`. PCM must be converted (`convert_pcm`) first."""
        return self._mel.segment(count)

    @property
    def next_chunk_client_bytes(self) -> int | None:
        """The client's audio (bytes, from the stream's first) once the next full chunk is
        ready; None while finalizing."""
        if self.finalizing:
            return None
        ready_at = self._ready_at - self._padding  # the padding lies before the chunk's end
        return self._origin_bytes + 2 * ready_at

    def advance(self, count: int) -> None:
        """The next chunk, of `count` new frames, went to the model. `chunk_client_bytes`: how
        much of the client's audio (bytes, from the stream's first) had to arrive for this chunk
        to be ready, so a server can time the text it gives; None for a finalize's chunks, which
        the request made ready."""
        self.chunk_client_bytes = self.next_chunk_client_bytes
        self._mel.advance(count)
        self.steps += 1
        self._next_chunk_at()
