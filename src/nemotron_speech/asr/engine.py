"""`AsrEngine`: many streams over one cache-aware model, run as batched streaming steps.

The engine is synchronous and not thread-safe: one thread owns it (the server's inference thread,
or the caller of the in-process STT service). `feed()` only buffers audio; `step()` runs every
stream that has a full chunk as one batched model call (two when some streams take their first
step, whose input shape differs) and reports what changed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nemotron_speech.asr.errors import AsrError, BufferFullError, StreamNotFoundError
from nemotron_speech.asr.features import IncrementalLogMel
from nemotron_speech.asr.model import (
    SAMPLE_RATE,
    load_nemo_model,
    offline_token_ids,
    select_right_context,
    streaming_preprocessor,
    supported_right_contexts,
    token_ids,
)
from nemotron_speech.asr.slots import CacheSlots
from nemotron_speech.asr.stream import Chunk, StreamState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transcript:
    """A stream's text: an interim whenever it changed, or the final text of an utterance."""

    stream_id: int
    text: str
    is_final: bool
    token_ids: tuple[int, ...] = ()  # set on finals: the utterance's exact token ids


@dataclass(frozen=True)
class StepInfo:
    """What one `step()` did, for metrics."""

    batch_size: int
    model_calls: int
    seconds: float


class AsrEngine:
    """Streaming ASR over one cache-aware FastConformer-RNNT model."""

    def __init__(self, model, right_context: int | None = None, max_buffered_seconds: float = 30.0):
        self.model = model
        self.device = next(model.parameters()).device
        self.geometry = select_right_context(model, right_context)
        self.max_buffered_samples = int(max_buffered_seconds * SAMPLE_RATE)
        self._preprocessor = streaming_preprocessor(model)
        self._slots = CacheSlots(model.encoder, self.device)
        self._streams: dict[int, StreamState] = {}
        self._next_id = 1
        self.last_step = StepInfo(0, 0, 0.0)

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        right_context: int | None = None,
        device: str = "cpu",
        cuda_graph_decoder: bool = False,
        **options,
    ) -> AsrEngine:
        """Load a `.nemo` (on the CPU first, then `device`) and build an engine on it."""
        model = load_nemo_model(model_path, device=device, cuda_graph_decoder=cuda_graph_decoder)
        return cls(model, right_context=right_context, **options)

    # -- facts -----------------------------------------------------------------------------

    @property
    def right_context(self) -> int:
        return self.geometry.right_context

    @property
    def supported_right_contexts(self) -> list[int]:
        return supported_right_contexts(self.model)

    @property
    def chunk_ms(self) -> float:
        return self.geometry.chunk_ms

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def finalize_padding_samples(self) -> int:
        """Silence appended on finalize: one chunk, enough right context for the last frame."""
        return self.geometry.chunk * self.geometry.hop_samples

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- stream lifecycle ------------------------------------------------------------------

    def open_stream(self) -> int:
        """Start a stream with fresh caches; returns its id."""
        stream_id = self._next_id
        self._next_id += 1
        mel = IncrementalLogMel(
            self._preprocessor,
            self.geometry.hop_samples,
            self.geometry.window_samples,
            self.device,
        )
        self._streams[stream_id] = StreamState(stream_id, self._slots.acquire(), mel, self.geometry)
        return stream_id

    def feed(self, stream_id: int, pcm16: bytes) -> None:
        """Buffer PCM16 little-endian 16 kHz mono audio; computation happens in `step()`."""
        stream = self._stream(stream_id)
        if stream.finalizing:
            raise AsrError(f"stream {stream_id} is finalizing; wait for its final transcript")
        if stream.pending_samples + len(pcm16) // 2 > self.max_buffered_samples:
            raise BufferFullError(
                f"stream {stream_id} has {stream.pending_samples / SAMPLE_RATE:.1f} s of audio "
                f"waiting (limit {self.max_buffered_samples / SAMPLE_RATE:.1f} s); send audio "
                "no faster than real time"
            )
        stream.add_pcm16(pcm16)

    def buffered_seconds(self, stream_id: int) -> float:
        """Audio received but not yet processed."""
        return self._stream(stream_id).pending_samples / SAMPLE_RATE

    def flush(self, stream_id: int) -> str:
        """The current text of the utterance; changes nothing (a soft finalize)."""
        return self._stream(stream_id).reported_text

    def request_finalize(self, stream_id: int) -> None:
        """End the utterance: pad right-context silence; a later `step()` returns the final
        `Transcript` once the stream's remaining audio is processed, then the stream is clean."""
        stream = self._stream(stream_id)
        if not stream.finalizing:
            stream.begin_finalize(self.finalize_padding_samples)

    def finalize(self, stream_id: int) -> Transcript:
        """Hard finalize one stream now and return its final transcript (other streams wait)."""
        self.request_finalize(stream_id)
        while True:
            for transcript in self.step(only=(stream_id,)):
                if transcript.is_final:
                    return transcript

    def close(self, stream_id: int) -> None:
        """Forget a stream and free its cache slot."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            raise StreamNotFoundError(f"stream {stream_id} is not open")
        self._slots.release(stream.slot)

    def has_work(self) -> bool:
        """True when `step()` would run the model or deliver a final."""
        return any(s.needs_final() or s.has_chunk() for s in self._streams.values())

    # -- the scheduler ---------------------------------------------------------------------

    @torch.inference_mode()
    def step(self, only: tuple[int, ...] | None = None) -> list[Transcript]:
        """Run one chunk of every ready stream, batched; return changed interims and finals."""
        started = time.perf_counter()
        streams = [self._stream(i) for i in only] if only else list(self._streams.values())
        results: list[Transcript] = []
        first: list[tuple[StreamState, Chunk]] = []
        later: list[tuple[StreamState, Chunk]] = []
        for stream in streams:
            if stream.needs_final():
                results.append(self._complete(stream))
                continue
            chunk = stream.next_chunk()
            if chunk is not None:
                (first if chunk.is_first else later).append((stream, chunk))
        for group in (first, later):
            if group:
                self._run(group)
        for stream, _ in first + later:
            results.extend(self._report(stream))
        self.last_step = StepInfo(
            len(first) + len(later),
            int(bool(first)) + int(bool(later)),
            time.perf_counter() - started,
        )
        return results

    def _run(self, group: list[tuple[StreamState, Chunk]]) -> None:
        """One `conformer_stream_step` over streams whose chunks share a drop value."""
        streams = [stream for stream, _ in group]
        features = [chunk.features for _, chunk in group]
        lengths = torch.tensor([f.shape[1] for f in features], device=self.device)
        batch = features[0].new_zeros(len(features), features[0].shape[0], int(lengths.max()))
        for row, feature in enumerate(features):
            batch[row, :, : feature.shape[1]] = feature
        slots = torch.tensor([stream.slot for stream in streams], device=self.device)
        channel, time_cache, channel_len = self._slots.gather(slots)
        previous = [stream.hypothesis for stream in streams]
        outputs = self.model.conformer_stream_step(
            processed_signal=batch,
            processed_signal_length=lengths,
            cache_last_channel=channel,
            cache_last_time=time_cache,
            cache_last_channel_len=channel_len,
            keep_all_outputs=any(stream.finalizing for stream in streams),
            previous_hypotheses=None if all(h is None for h in previous) else previous,
            drop_extra_pre_encoded=group[0][1].drop_extra_pre_encoded,
            return_transcription=True,
        )
        _, _, channel, time_cache, channel_len, hypotheses = outputs
        self._slots.scatter(slots, channel, time_cache, channel_len)
        for stream, hypothesis in zip(streams, hypotheses, strict=True):
            stream.hypothesis = hypothesis

    def _report(self, stream: StreamState) -> list[Transcript]:
        if stream.needs_final():
            return [self._complete(stream)]
        text = _text(stream.hypothesis)
        if text == stream.reported_text:
            return []
        stream.reported_text = text
        return [Transcript(stream.stream_id, text, is_final=False)]

    def _complete(self, stream: StreamState) -> Transcript:
        """Deliver the utterance's final text and start the stream over."""
        hypothesis = stream.hypothesis
        tokens = tuple(token_ids(hypothesis)) if hypothesis is not None else ()
        stream.reset()
        self._slots.clear(stream.slot)
        return Transcript(stream.stream_id, _text(hypothesis), is_final=True, token_ids=tokens)

    def _stream(self, stream_id: int) -> StreamState:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise StreamNotFoundError(f"stream {stream_id} is not open") from None

    # -- whole utterances ------------------------------------------------------------------

    def transcribe(self, samples: np.ndarray, packet_samples: int = 320) -> Transcript:
        """Stream `samples` through a fresh stream in packets (20 ms by default) and finalize."""
        stream_id = self.open_stream()
        stream = self._stream(stream_id)
        try:
            for start in range(0, len(samples), packet_samples):
                stream.add_samples(samples[start : start + packet_samples])
                while stream.has_chunk():
                    self.step(only=(stream_id,))
            return self.finalize(stream_id)
        finally:
            self.close(stream_id)

    def transcribe_offline(self, samples: np.ndarray) -> tuple[list[int], str]:
        """Whole-utterance decode of `samples` plus the same end padding streaming adds: the
        reference streaming must equal, token for token."""
        padded = np.concatenate([samples, np.zeros(self.finalize_padding_samples, np.float32)])
        return offline_token_ids(self.model, torch.from_numpy(padded.astype(np.float32)))

    def warmup(self, seconds: float = 1.0) -> None:
        """Run a stream of synthetic audio through the streaming path (never `transcribe()`,
        which perturbs later streaming results), so the first real stream pays no first-call
        costs."""
        samples = 0.1 * np.sin(np.arange(int(seconds * SAMPLE_RATE)) * 0.05).astype(np.float32)
        self.transcribe(samples)
        log.debug("warm-up done on %s", self.device)


def _text(hypothesis) -> str:
    return "" if hypothesis is None else (hypothesis.text or "").strip()
