"""`AsrEngine`: many streams over one cache-aware model, run as batched streaming steps.

The engine is synchronous and not thread-safe: one thread owns it (the server's inference thread,
or the caller of the in-process STT service). `feed()` only buffers audio; `step()` runs every
stream that has a full chunk as one batched model call (more when some streams take their first
step, whose input shape differs: on a GPU those run beside the others) and reports what changed.
`launch()` and `finish()` are its two halves: a server prepares one step on the host while the
device computes the one before.
"""

from __future__ import annotations

import logging
import resource
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from nemotron_speech.asr.chunks import ChunkCutter
from nemotron_speech.asr.decoding import SlotGreedyDecoder
from nemotron_speech.asr.errors import AsrError, BufferFullError, StreamNotFoundError
from nemotron_speech.asr.fast_layers import use_fast_layers
from nemotron_speech.asr.features import MelFrontEnd
from nemotron_speech.asr.model import (
    load_nemo_model,
    offline_token_ids,
    select_right_context,
    streaming_preprocessor,
    supported_right_contexts,
)
from nemotron_speech.asr.reports import LaunchedStep, StepInfo, StreamTranscript
from nemotron_speech.asr.slots import ENCODER_CACHES, SlotStore, add_encoder_caches
from nemotron_speech.asr.stream import StreamState
from nemotron_speech.asr.transfer import HostCopy, to_device
from nemotron_speech.protocol import SAMPLE_RATE

log = logging.getLogger(__name__)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class AsrEngine:
    """Streaming ASR over one cache-aware FastConformer-RNNT model.

    `precision` casts the encoder (decoder and joint stay fp32); `cuda_graphs` replays first and
    later steps from CUDA graphs (default: on when the model is on a GPU); `fast_layers` runs the
    encoder's attention and convolution through `fast_layers`' streaming versions (same function,
    other kernels; default: with `cuda_graphs`). In fp32 without graphs and fast layers the
    engine runs exactly the encoder computation of NeMo's `conformer_stream_step`, and NeMo's
    greedy rule on its joint and prediction network (`decoding`): the exactness reference. The
    engine owns its model: it casts and swaps the encoder's modules in place.
    """

    def __init__(
        self,
        model,
        right_context: int | None = None,
        max_buffered_seconds: float = 30.0,
        precision: str = "fp32",
        cuda_graphs: bool | None = None,
        max_graph_batch: int = 1024,
        fast_layers: bool | None = None,
    ):
        if precision not in PRECISIONS:
            raise AsrError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.model = model
        self.device = next(model.parameters()).device
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda"
        if cuda_graphs and self.device.type != "cuda":
            raise AsrError("cuda_graphs=True needs the model on a CUDA device")
        if max_graph_batch < 1:
            raise AsrError(f"max_graph_batch must be at least 1, got {max_graph_batch}")
        self.geometry = select_right_context(model, right_context)
        self.max_buffered_samples = int(max_buffered_seconds * SAMPLE_RATE)
        self.precision = precision
        model.encoder.to(PRECISIONS[precision])
        use_fast_layers(model.encoder, cuda_graphs if fast_layers is None else fast_layers)
        self._front_end = MelFrontEnd(streaming_preprocessor(model), self.device)
        self._slots = SlotStore(self.device)
        add_encoder_caches(self._slots, model.encoder)
        features = int(model.cfg.preprocessor.features)
        self._chunks = ChunkCutter(self._slots, features, self.geometry)
        self._decoder = SlotGreedyDecoder(model, self._slots)
        self._graphed = {}  # CUDA-graph steps keyed by `is_first` (first chunks or later ones)
        if cuda_graphs:
            from nemotron_speech.asr.graphs import graphed_steps

            self._graphed = graphed_steps(
                model.encoder, self._decoder, self._slots, features, self.geometry, max_graph_batch
            )
        self._streams: dict[int, StreamState] = {}
        self._next_id = 1
        self._launched: deque[LaunchedStep] = deque()  # steps not yet finished, oldest first
        # a launch returns before the device has run the step (CUDA graphs: no host wait in
        # it), so launching the next step before finishing this one overlaps host and device;
        # elsewhere a launch runs the whole step, and finishing first gives results a step sooner
        self.launches_ahead = bool(self._graphed)
        self.last_step = StepInfo(0, 0, 0.0)

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        right_context: int | None = None,
        device: str = "cpu",
        **options,
    ) -> AsrEngine:
        """Load a `.nemo` (on the CPU first, then `device`) and build an engine on it; `options`
        go to the constructor."""
        model = load_nemo_model(model_path, device=device)
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

    def memory_report(self) -> str:
        """Peak resident memory of the process and the GPU memory torch holds on the engine's
        device: what a deployment sizes its neighbours (vLLM, TTS) and `--max-streams` by."""
        rss = f"rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        if self.device.type != "cuda":
            return rss
        return f"{rss}, cuda {torch.cuda.memory_allocated(self.device) / 2**20:.0f} MiB allocated"

    # -- stream lifecycle ------------------------------------------------------------------

    def open_stream(self) -> int:
        """Start a stream with fresh caches; returns its id."""
        stream_id = self._next_id
        self._next_id += 1
        self._streams[stream_id] = StreamState(stream_id, self._slots.acquire(), self.geometry)
        return stream_id

    def feed(self, stream_id: int, pcm16: bytes) -> None:
        """Buffer PCM16 little-endian 16 kHz mono audio; computation happens in `step()`."""
        stream = self._stream(stream_id)
        if stream.resetting:
            raise AsrError(f"stream {stream_id} is resetting; wait for its final transcript")
        if stream.pending_samples + len(pcm16) // 2 > self.max_buffered_samples:
            raise BufferFullError(
                f"stream {stream_id} has {stream.pending_samples / SAMPLE_RATE:.1f} s of audio "
                f"waiting (limit {self.max_buffered_samples / SAMPLE_RATE:.1f} s); send audio "
                "no faster than real time"
            )
        stream.add_pcm16(pcm16)

    def has_chunk(self, stream_id: int) -> bool:
        """The stream's next chunk is ready: the next `step()` will run it."""
        return self._stream(stream_id).has_chunk()

    def next_chunk_bytes(self, stream_id: int) -> int | None:
        """The stream's audio, in bytes fed since its first, once its next full chunk is ready;
        None while it finalizes (its padding makes the chunks ready)."""
        return self._stream(stream_id).next_chunk_client_bytes

    def buffered_seconds(self, stream_id: int) -> float:
        """Audio received but not yet processed."""
        return self._stream(stream_id).pending_samples / SAMPLE_RATE

    def flush(self, stream_id: int) -> str:
        """The current text of the utterance; changes nothing."""
        return self._stream(stream_id).reported_text

    def request_finalize(self, stream_id: int, reset: bool = False) -> None:
        """End the utterance: pad right-context silence; a later `step()` returns the final
        `StreamTranscript` (the exact words since the previous final) once the audio received so far
        and the padding are processed.

        Without `reset` the stream keeps its left context and decoder state: the padding is
        heard as part of a pause, audio fed meanwhile follows it, and words after a pause are
        recognised as in an uninterrupted stream. With `reset` the audio ends at the padding
        (no feeding until the final) and the stream then starts clean.
        """
        stream = self._stream(stream_id)
        if not stream.finalizing:
            stream.begin_finalize(self.finalize_padding_samples, reset)

    def finalize(self, stream_id: int, reset: bool = False) -> StreamTranscript:
        """Finalize one stream now and return its final transcript (other streams wait)."""
        self.request_finalize(stream_id, reset)
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
        """True when `step()` would run the model or deliver a final (with no step in flight:
        a final due then waits for `finish`)."""
        # `finalizing` first: the check runs for every open stream, and most are not
        return any(
            (s.finalizing and s.needs_final()) or s.has_chunk() for s in self._streams.values()
        )

    # -- the scheduler ---------------------------------------------------------------------

    def step(self, only: tuple[int, ...] | None = None) -> list[StreamTranscript]:
        """Run one chunk of every ready stream, batched; return changed interims and finals."""
        return self.finish(self.launch(only))

    @torch.inference_mode()
    def launch(self, only: tuple[int, ...] | None = None) -> LaunchedStep:
        """Start one chunk of every ready stream (or of `only` these) on the device, batched;
        `finish` returns its transcripts. A step may be launched while earlier ones still run
        (the device runs them in order, and the host prepares one while the device computes
        another); steps are finished in launch order, and a stream's final waits until none of
        its chunks is in flight."""
        started = time.perf_counter()
        streams = [self._stream(i) for i in only] if only else list(self._streams.values())
        finals: list[StreamTranscript] = []
        ready: list[StreamState] = []
        counts: list[int] = []
        for stream in streams:  # one cheap readiness check per open stream, every step
            if stream.finalizing and stream.needs_final():
                if not stream.in_flight:
                    finals.append(self._complete(stream))
            elif count := stream.chunk_frames():
                ready.append(stream)
                counts.append(count)
        groups = self._groups(ready)
        labels = []
        if ready:
            features = self._compute_features(ready, counts)
            # every group is launched before any is read: the device runs them back to back
            # (first chunks beside later ones), while the host moves the streams on
            try:
                labels = [self._run(ready, counts, features, rows) for rows in groups]
            finally:  # whatever ran beside is waited for (on the device), even after a failure
                for graphed in self._graphed.values():
                    graphed.join()
            for stream, count in zip(ready, counts, strict=True):
                stream.advance(count)
                stream.in_flight += 1
        audio_bytes = [stream.chunk_client_bytes for stream in ready]
        to_host = HostCopy(labels)  # queued now: its copies count in the launch's time
        seconds = time.perf_counter() - started
        launched = LaunchedStep(ready, audio_bytes, groups, to_host, finals, seconds)
        self._launched.append(launched)
        return launched

    def finish(self, launched: LaunchedStep) -> list[StreamTranscript]:
        """Wait for a launched step's labels; return its changed interims and finals."""
        started = time.perf_counter()
        if not self._launched or self._launched[0] is not launched:
            raise AsrError("finish steps in the order they were launched, each once")
        self._launched.popleft()
        ready = launched.streams
        for stream in ready:
            stream.in_flight -= 1
        for rows, group_labels in zip(launched.groups, launched.labels.get(), strict=True):
            for row, tokens in zip(rows, self._decoder.tokens(group_labels), strict=True):
                ready[row].token_ids.extend(tokens)
        results = launched.finals + self._report_changes(ready, launched.audio_bytes)
        self.last_step = StepInfo(
            len(ready),
            len(launched.groups),
            launched.seconds + time.perf_counter() - started,
            tuple(stream.stream_id for stream in ready),
        )
        return results

    def _groups(self, ready: list[StreamState]) -> list[list[int]]:
        """The step's model calls, as rows of `ready` whose chunks share a shape: first chunks
        (in parts that fit their graphs) and later ones."""
        first = [row for row, stream in enumerate(ready) if stream.steps == 0]
        later = [row for row, stream in enumerate(ready) if stream.steps]
        graphed = self._graphed.get(True)
        size = graphed.max_batch if graphed is not None else max(1, len(first))
        parts = [first[start : start + size] for start in range(0, len(first), size)]
        return [*parts, later] if later else parts

    def _compute_features(self, streams: list[StreamState], counts: list[int]) -> torch.Tensor:
        """Log-mel of every stream's next chunk as one preprocessor call; row r holds stream
        r's `counts[r]` new frames from column `LEAD_FRAMES` on."""
        for stream in streams:
            stream.convert_pcm()
        return self._front_end(
            [stream.segment(count) for stream, count in zip(streams, counts, strict=True)]
        )

    def _run(
        self, ready: list[StreamState], counts: list[int], features: torch.Tensor, rows: list[int]
    ) -> torch.Tensor:
        """One encoder step and one greedy decode over the `rows` of the step's streams whose
        chunks share a shape (first chunks or later ones): the encoder call NeMo's
        `conformer_stream_step` makes, and NeMo's greedy rule, on chunks cut from `features` on
        the device. Returns the labels (`SlotGreedyDecoder.tokens`), maybe not yet computed."""
        streams = [ready[row] for row in rows]
        slots = to_device([stream.slot for stream in streams], self.device)
        is_first = streams[0].steps == 0
        signal, lengths, drop = self._chunks(
            features, rows, [counts[row] for row in rows], slots, is_first
        )
        signal = signal.to(PRECISIONS[self.precision])
        graphed = self._graphed.get(is_first)
        if graphed is not None and len(streams) <= graphed.max_batch:
            return graphed(signal, lengths, slots)
        encoded, encoded_len = self._encode_eager(signal, lengths, slots, drop, streams)
        return self._decoder(encoded.float(), encoded_len, slots)

    def _encode_eager(self, signal, lengths, slots, drop: int, streams: list[StreamState]):
        channel, time_cache, channel_len = self._slots.gather(ENCODER_CACHES, slots)
        encoded, encoded_len, channel, time_cache, channel_len = (
            self.model.encoder.cache_aware_stream_step(
                processed_signal=signal,
                processed_signal_length=lengths,
                cache_last_channel=channel,
                cache_last_time=time_cache,
                cache_last_channel_len=channel_len,
                keep_all_outputs=any(stream.resetting for stream in streams),
                drop_extra_pre_encoded=drop,
            )
        )
        self._slots.scatter(ENCODER_CACHES, slots, (channel, time_cache, channel_len))
        return encoded, encoded_len

    def _report_changes(
        self, streams: list[StreamState], audio_bytes: list[int | None]
    ) -> list[StreamTranscript]:
        """Finals of finished streams, and interims whose text changed, of a step's streams
        still open; `audio_bytes`: each stream's `chunk_client_bytes` for the step's chunk."""
        results = []
        for stream, at in zip(streams, audio_bytes, strict=True):
            if self._streams.get(stream.stream_id) is not stream:
                continue  # closed while its chunk was in flight
            if stream.needs_final() and not stream.in_flight:
                results.append(self._complete(stream))
            elif len(stream.token_ids) != stream.reported_tokens:
                stream.reported_tokens = len(stream.token_ids)
                text = self._decoder.text(stream.token_ids)
                if text != stream.reported_text:
                    stream.reported_text = text
                    results.append(StreamTranscript(stream.stream_id, text, False, audio_bytes=at))
        return results

    def _complete(self, stream: StreamState) -> StreamTranscript:
        """Deliver the utterance's final text; then start the next utterance, in the same
        context or (after a reset) from clean caches."""
        tokens = tuple(stream.token_ids)
        text = self._decoder.text(stream.token_ids) if tokens else ""
        if stream.resetting:
            stream.reset()
            self._slots.clear(stream.slot)
        else:
            stream.commit()
        return StreamTranscript(stream.stream_id, text, is_final=True, token_ids=tokens)

    def _stream(self, stream_id: int) -> StreamState:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise StreamNotFoundError(f"stream {stream_id} is not open") from None

    # -- whole utterances ------------------------------------------------------------------

    def transcribe(self, samples: np.ndarray, packet_samples: int = 320) -> StreamTranscript:
        """Stream `samples` through a fresh stream in packets (20 ms by default) and finalize."""
        stream_id = self.open_stream()
        stream = self._stream(stream_id)
        try:
            for start in range(0, len(samples), packet_samples):
                stream.add_samples(samples[start : start + packet_samples])
                while stream.has_chunk():
                    self.step(only=(stream_id,))
            return self.finalize(stream_id, reset=True)
        finally:
            self.close(stream_id)

    def transcribe_offline(self, samples: np.ndarray) -> tuple[list[int], str]:
        """Whole-utterance decode of `samples` plus the same end padding streaming adds: the
        reference streaming must equal, token for token."""
        if self.precision != "fp32":
            raise AsrError("the offline reference is defined for the fp32 engine only")
        padded = np.concatenate([samples, np.zeros(self.finalize_padding_samples, np.float32)])
        return offline_token_ids(self.model, torch.from_numpy(padded.astype(np.float32)))

    def warmup(self, seconds: float = 1.0) -> None:
        """Run a stream of synthetic audio through the streaming path (never `transcribe()`,
        which perturbs later streaming results), so the first real stream pays no first-call
        costs, and capture every CUDA-graph bucket."""
        samples = 0.1 * np.sin(np.arange(int(seconds * SAMPLE_RATE)) * 0.05).astype(np.float32)
        self.transcribe(samples)
        with torch.inference_mode():  # capturing mid-stream would stall every stream
            for graphed in self._graphed.values():
                graphed.capture_all()
        log.debug("warm-up done on %s", self.device)
