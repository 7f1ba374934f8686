"""`MagpieEngine`: NVIDIA's Magpie TTS (NeMo `MagpieTTSModel` + its audio codec) in-process.

Text is split into sentences (NeMo's splitter); each round of sentences runs through NeMo's
batched, KV-cached `infer_batch`, and `streaming.DecodeTap` turns codec frames into audio while
the decoder is still sampling (see `streaming` for why that is exact with NanoCodec). The engine is
synchronous; a lock lets several threads share one, one request (or batch) at a time.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nemotron_speech.tts.magpie.codec_stream import CodecStream, supports
from nemotron_speech.tts.magpie.errors import (
    MagpieInputError,
    MagpieLoadError,
    MagpieModelNotFoundError,
)
from nemotron_speech.tts.magpie.graphs import StaticSteps, unsupported
from nemotron_speech.tts.magpie.streaming import DecodeTap, Stopped

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# how each frame's decoder and sampling run: NeMo's own calls; the same arithmetic as fixed-shape
# steps on a preallocated cache (any device); those steps replayed from CUDA graphs (graphs.py)
STEPS = ("nemo", "static", "graphs")
FIRST_CHUNK_FRAMES = 4  # ~190 ms of audio at NanoCodec's 21.5 frames a second
CHUNK_FRAMES = 8
MAX_TEXT_CHARS = 2_000  # one request; pipecat's TTS services send a sentence at a time

OnAudio = Callable[[int, np.ndarray], None]

log = logging.getLogger(__name__)


def default_steps(model, device: torch.device) -> str:
    """The engine's steps unless told: CUDA graphs on a CUDA device, else NeMo's own calls.

    Why graphs: on an H200 (full-size architecture, random weights; docs/benchmarks.md) a frame
    took 6.5 ms against NeMo's 36 at batch 1 and 10 against 45 at batch 16, about 5x fewer, and
    the codes were NeMo's in fp32 (tests/test_magpie_cuda.py). A CPU cannot run CUDA graphs
    (the static steps alone were not measured there), so it keeps NeMo's calls; so does a decoder
    the graph steps cannot stand in for, with a warning, since the fast path is lost.
    """
    if device.type != "cuda":
        return "nemo"
    reason = unsupported(model)
    if reason is None and not model.use_kv_cache_for_inference:
        reason = "NeMo's uncached decoder path"
    if reason is None:
        return "graphs"
    log.warning("Magpie on %s runs NeMo's own steps: CUDA graphs do not support %s", device, reason)
    return "nemo"


@dataclass(frozen=True)
class Request:
    """One text to speak, already checked: its sentences' token ids and the speaker index."""

    sentences: tuple[tuple[int, ...], ...]
    speaker: int


class MagpieEngine:
    """Speech from text with a Magpie checkpoint, streamed a few codec frames at a time.

    Voices are the checkpoint's baked speakers, named "0", "1", ... unless `voice_names` names
    them; languages are those its text tokenizers cover (NeMo's language map); the sample rate is
    the codec's. Audio is float32 in [-1, 1]. `seed` makes a call reproducible (torch's global
    generator is seeded), the same for the streaming and the whole-audio call.

    `steps` (one of `STEPS`, settable between calls): "graphs" replays each frame's decoder step
    and sampling from CUDA graphs instead of launching NeMo's kernels one by one (a frame is
    launch-bound on a GPU); "static" runs those steps without graphs; "nemo" is NeMo's own
    calls. None picks `default_steps`: graphs on a CUDA device, NeMo's calls on a CPU.
    """

    def __init__(
        self,
        model,
        *,
        first_chunk_frames: int = FIRST_CHUNK_FRAMES,
        chunk_frames: int = CHUNK_FRAMES,
        max_text_chars: int = MAX_TEXT_CHARS,
        voice_names: Sequence[str] | None = None,
        precision: str = "fp32",
        steps: str | None = None,
    ):
        from nemo.collections.tts.parts.utils.tts_dataset_utils import LANGUAGE_TOKENIZER_MAP

        _require_baked_speakers(model, "the model")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.model = model
        count = model.num_baked_speakers
        names = tuple(voice_names) if voice_names else tuple(str(i) for i in range(count))
        if len(names) != count:
            raise ValueError(f"{len(names)} voice names for a checkpoint with {count} speakers")
        self.voices = names
        tokenizers = list(model.tokenizer.tokenizers)
        self._tokenizer_of = {
            language: next(name for name in candidates if name in tokenizers)
            for language, candidates in LANGUAGE_TOKENIZER_MAP.items()
            if any(name in tokenizers for name in candidates)
        }
        self.languages = tuple(self._tokenizer_of)
        self.sample_rate = int(model.output_sample_rate)
        self.samples_per_frame = (
            model.codec_model_samples_per_frame * self.sample_rate // int(model.sample_rate)
        )
        # None: a codec decoder that is not causal; then each sentence is one chunk
        self.codec_stream = (
            CodecStream(model._codec_helper) if supports(model._codec_model.audio_decoder) else None
        )
        self.first_chunk_frames = first_chunk_frames
        self.chunk_frames = chunk_frames
        self.max_text_chars = max_text_chars
        self.max_text_tokens = _max_text_tokens(model)
        self.precision = precision
        self._static: dict[str, StaticSteps] = {}
        self.steps = default_steps(model, self.device) if steps is None else steps
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, model_path: str | Path, codec_path: str | Path, device: str = "cpu", **options
    ) -> MagpieEngine:
        """Restore both `.nemo` files on the CPU, then move the model to `device`.

        The Magpie checkpoint stores only the path its codec had when it was saved (the NVIDIA
        one names the Hub, which would download): the codec is always taken from `codec_path`.
        """
        for what, path in (("model", model_path), ("codec", codec_path)):
            if not Path(path).is_file():
                raise MagpieModelNotFoundError(what, str(path))
        from nemo.collections.tts.models.magpietts import MagpieTTSModel
        from nemo.utils import logging as nemo_logging
        from omegaconf import open_dict

        nemo_logging.setLevel("ERROR")
        try:
            config = MagpieTTSModel.restore_from(
                str(model_path), return_config=True, map_location="cpu"
            )
            with open_dict(config):
                config.codecmodel_path = str(Path(codec_path).resolve())
            model = MagpieTTSModel.restore_from(
                str(model_path), override_config_path=config, map_location="cpu"
            )
        except Exception as exc:  # NeMo raises many types for a bad archive
            raise MagpieLoadError(
                f"cannot load {model_path} (codec {codec_path}) as a Magpie TTS model: {exc}"
            ) from exc
        _require_baked_speakers(model, str(model_path))
        # The NVIDIA checkpoint ships with the cache off: every step would re-run the whole prefix
        model.use_kv_cache_for_inference = True
        return cls(model.eval().to(torch.device(device)), **options)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def steps(self) -> str:
        return self._steps

    @steps.setter
    def steps(self, steps: str) -> None:
        if steps not in STEPS:
            raise ValueError(f"steps must be one of {', '.join(STEPS)}, not {steps!r}")
        if steps != "nemo" and steps not in self._static:  # made once: graphs are kept
            self._static[steps] = StaticSteps(self.model, capture=steps == "graphs")
        self._steps = steps

    def check(self, text: str, voice: str | None = None, language: str = "en") -> Request:
        """The request for `text`, or `MagpieInputError` saying what is wrong with it."""
        if not text or not text.strip():
            raise MagpieInputError("empty text: there is nothing to say")
        if len(text) > self.max_text_chars:
            raise MagpieInputError(
                f"text of {len(text)} characters is longer than the {self.max_text_chars} one "
                "request takes; send it in parts (a sentence at a time is best for latency)"
            )
        voice = self.voices[0] if voice is None else str(voice)
        if voice not in self.voices:
            raise MagpieInputError(
                f"unknown voice {voice!r}; this checkpoint has {', '.join(self.voices)}"
            )
        if language not in self._tokenizer_of:
            raise MagpieInputError(
                f"unknown language {language!r}; this checkpoint speaks {', '.join(self.languages)}"
            )
        return Request(self._sentences(text, language), self.voices.index(voice))

    def synthesize(self, text: str, voice: str | None = None, language: str = "en", *, seed=None):
        """The whole audio at once, as NeMo's `infer_batch` decodes it (the reference for the
        streamed chunks)."""
        request = self.check(text, voice, language)
        parts: list[np.ndarray] = []
        self.run([request], lambda item, audio: parts.append(audio), stream=False, seed=seed)
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def stream(
        self,
        text: str,
        on_audio: Callable[[np.ndarray], None],
        voice: str | None = None,
        language: str = "en",
        *,
        seed=None,
        should_stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Speak `text`, calling `on_audio(samples)` for each chunk as soon as it is decoded.

        Returns False when `should_stop()` (asked once per decoder step) ended it early.
        """
        request = self.check(text, voice, language)
        return self.run(
            [request], lambda item, audio: on_audio(audio), seed=seed, should_stop=should_stop
        )

    def run(
        self,
        requests: Sequence[Request],
        on_audio: OnAudio,
        *,
        stream: bool = True,
        seed=None,
        should_stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Speak several requests as one batch: round k runs the k-th sentence of every request
        that has one. `on_audio(index, samples)` gets each request's audio in order."""
        with self._lock, torch.inference_mode(), _quiet_stdout():
            if seed is not None:
                torch.manual_seed(seed)
            rounds = max(len(request.sentences) for request in requests)
            try:
                for k in range(rounds):
                    active = [i for i, request in enumerate(requests) if k < len(request.sentences)]
                    batch = [(requests[i].sentences[k], requests[i].speaker) for i in active]
                    emit = functools.partial(_to_request, on_audio, active)
                    self._round(batch, emit, stream, should_stop)
            except Stopped:
                return False
            finally:
                # infer_batch leaves the KV cache on, which breaks a later do_tts/generate_speech
                self.model.decoder.reset_cache(use_cache=False)
            return True

    def warmup(self) -> None:
        """One short sentence through the streaming path (first calls allocate and compile)."""
        self.run([self.check("Hello.")], lambda item, audio: None, seed=0)

    def _round(self, batch, on_audio: OnAudio, stream: bool, should_stop) -> None:
        """One `infer_batch` call over (token ids, speaker) pairs."""
        model = self.model
        lengths = [len(tokens) for tokens, _ in batch]
        text = torch.zeros(len(batch), max(lengths), dtype=torch.long)
        for row, (tokens, _) in enumerate(batch):
            text[row, : len(tokens)] = torch.tensor(tokens)
        inputs = {
            "text": text.to(self.device),
            "text_lens": torch.tensor(lengths, device=self.device),
            "speaker_indices": [speaker for _, speaker in batch],
        }
        if stream:
            tap = DecodeTap(
                len(batch),
                model._codec_helper,
                self.codec_stream,
                on_audio,
                should_stop,
                self.first_chunk_frames,
                self.chunk_frames,
            )
            with tap.installed(model), self._installed(), self._autocast():
                model.infer_batch(inputs, use_cfg=True, use_local_transformer_for_inference=True)
            tap.finish()
            return
        with self._installed(), self._autocast():
            output = model.infer_batch(
                inputs, use_cfg=True, use_local_transformer_for_inference=True
            )
        audio = output.predicted_audio.float().cpu().numpy()
        for row, length in enumerate(output.predicted_audio_lens.tolist()):
            if length:
                on_audio(row, audio[row, :length])

    def _installed(self):
        if self._steps == "nemo":
            return contextlib.nullcontext()
        return self._static[self._steps].installed()

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _sentences(self, text: str, language: str) -> tuple[tuple[int, ...], ...]:
        """Token ids (EOS appended) per sentence, each short enough for one decoder pass."""
        from nemo.collections.tts.parts.utils.tts_dataset_utils import (
            DEFAULT_LANGUAGE_THRESHOLDS,
            split_by_sentence,
        )

        # NeMo's own threshold (~20 s of speech), below the decoder's step limit
        words = DEFAULT_LANGUAGE_THRESHOLDS.thresholds.get(language, 45)
        name = self._tokenizer_of[language]
        result = []
        for sentence in split_by_sentence(text, language=language):
            pieces = sentence.split()
            for start in range(0, len(pieces), words):
                part = " ".join(pieces[start : start + words])
                tokens = self.model.tokenizer.encode(text=part, tokenizer_name=name)
                if not tokens:
                    continue
                if len(tokens) + 1 > self.max_text_tokens:
                    raise MagpieInputError(
                        f"a sentence of {len(tokens)} tokens is longer than the "
                        f"{self.max_text_tokens - 1} the model reads at once: {part[:60]!r}...; "
                        "split it with punctuation"
                    )
                result.append((*tokens, self.model.eos_id))
        if not result:
            raise MagpieInputError(
                f"nothing in {text[:60]!r} is speakable in {language!r} (no character the "
                "tokenizer knows)"
            )
        return tuple(result)


def _require_baked_speakers(model, source: str) -> None:
    """The engine speaks with a checkpoint's own voices: a `MagpieTTSModel` with baked speakers."""
    from nemo.collections.tts.models.magpietts import MagpieTTSModel

    if not isinstance(model, MagpieTTSModel):
        raise MagpieLoadError(f"{source} is a {type(model).__name__}, not a Magpie TTS model")
    if not model.has_baked_context_embedding:
        raise MagpieLoadError(
            f"{source} has no baked speakers; the engine speaks with a checkpoint's own voices "
            "(magpie_tts_multilingual_357m has five)"
        )


def _to_request(on_audio: OnAudio, active: list[int], row: int, audio: np.ndarray) -> None:
    """A batch row's audio, passed on under the index of the request it belongs to."""
    on_audio(active[row], audio)


def _max_text_tokens(model) -> int:
    """Longest token sequence the text encoder reads: its learnable position table, if any."""
    table = getattr(model.encoder, "position_embeddings", None)
    return table.num_embeddings if table is not None else 1_000_000


class _DropThisThread(io.TextIOBase):
    """stdout for the length of a call: drops what the calling thread prints, passes the rest.

    `infer_batch` prints progress ("Decoding timestep N") on every call; other threads' output
    must still get through while it runs.
    """

    def __init__(self, target):
        self._target = target
        self._thread = threading.get_ident()

    def write(self, text: str) -> int:
        if threading.get_ident() == self._thread:
            return len(text)
        return self._target.write(text)

    def flush(self) -> None:
        self._target.flush()


def _quiet_stdout():
    return contextlib.redirect_stdout(_DropThisThread(sys.stdout))
