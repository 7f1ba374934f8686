"""Audio out of Magpie while it is still generating: codec frames decoded as they are sampled.

`MagpieTTSModel.infer_batch` samples one codec frame per decoder step and decodes all of them once
at the end; NeMo has no per-step callback. Its loop calls `detect_eos(codes, argmax, method)` once
per step for every item that has not ended yet, in item order, with that item's new frame(s):
`DecodeTap` stands in for that method during a call, hands each frame to the item's
`FrameDecoder`, and stops the loop when asked to. `generate_speech` (NeMo's chunked path) calls
`detect_eos` the same way. While it is installed, `infer_batch`'s decode of the whole batch at the
end is skipped: the chunks have already decoded every frame.

Exactness: a causal decoder's output up to a frame depends only on the frames before it, within a
receptive field of `decoder_history_frames` frames. Decoding the new frames with that many frames of
history before them gives the samples a whole-utterance decode gives (up to float rounding), so
the chunks concatenate to `infer_batch`'s own audio. NanoCodec's decoder is a
`CausalHiFiGANDecoder`; for any other decoder there is no exact incremental decode, so the frames
are decoded once the item ends (one chunk per sentence).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

# Decodes codes (1, codebooks, frames) to float32 samples (frames * samples_per_frame,)
Decode = Callable[[torch.Tensor], np.ndarray]


def decoder_history_frames(decoder) -> int | None:
    """Frames of history a `CausalHiFiGANDecoder` needs to decode a frame exactly; None for a
    decoder that is not causal.

    Sums the receptive fields of its causal layers, each converted to frames at the rate that
    layer runs at: the input convolution, and per up-sampling stage the transposed convolution
    (kernel 2x its stride, right side trimmed) and the widest residual branch (a chain of
    dilated convolutions, plus one undilated convolution per dilation).
    """
    from nemo.collections.tts.modules.audio_codec_modules import (
        CausalConv1dNorm,
        CausalHiFiGANDecoder,
    )

    if not isinstance(decoder, CausalHiFiGANDecoder):
        return None

    def reach(conv: CausalConv1dNorm) -> int:
        return int(conv.kernel_size) - 1  # buffer holding the dilated kernel size

    history = float(reach(decoder.pre_conv))
    rate = 1
    for up, residual in zip(decoder.up_sample_conv_layers, decoder.res_layers, strict=True):
        kernel, stride = up.conv.kernel_size[0], up.conv.stride[0]
        history += math.ceil((kernel - 1) / stride) / rate
        rate *= stride
        branches = [
            sum(reach(m) for m in block.modules() if isinstance(m, CausalConv1dNorm))
            for block in residual.res_blocks
        ]
        history += max(branches) / rate
    history += reach(decoder.post_conv) / rate
    return math.ceil(history)


class FrameDecoder:
    """One item's frames in, its audio out in chunks: `first_chunk` frames, then `chunk`.

    With `history=None` (a decoder that is not causal) nothing comes out before `finish`.
    """

    def __init__(
        self, decode: Decode, samples_per_frame: int, history: int | None, first: int, chunk: int
    ):
        self._decode = decode
        self._samples = samples_per_frame
        self._history = history
        self._due = first
        self._chunk = chunk
        self._frames: list[torch.Tensor] = []  # each (codebooks, n)
        self._count = 0  # frames received
        self._emitted = 0  # frames already turned into audio

    def push(self, codes: torch.Tensor) -> np.ndarray | None:
        """Add codes (codebooks, n); audio when a chunk is complete."""
        self._frames.append(codes)
        self._count += codes.shape[-1]
        if self._history is None or self._count - self._emitted < self._due:
            return None
        self._due = self._chunk
        return self._decode_to(self._count)

    def finish(self, codes: torch.Tensor | None = None) -> np.ndarray | None:
        """The item ended: add its last codes (possibly none) and decode what is left."""
        if codes is not None and codes.shape[-1]:
            self._frames.append(codes)
            self._count += codes.shape[-1]
        return self._decode_to(self._count) if self._count > self._emitted else None

    def _decode_to(self, end: int) -> np.ndarray:
        frames = torch.cat(self._frames, dim=-1)
        start = self._emitted if self._history is not None else 0
        begin = max(0, start - (self._history or 0))
        audio = self._decode(frames[None, :, begin:end])
        self._emitted = end
        return audio[(start - begin) * self._samples :]


class Stopped(Exception):
    """Raised inside NeMo's loop to abandon a generation (the caller asked to stop)."""


class DecodeTap:
    """Stands in for `model.detect_eos` during one `infer_batch` call (`installed`); see the
    module docstring.

    `on_audio(item, samples)` gets every chunk as soon as it is decoded; `should_stop()` is asked
    once per decoder step, and a True abandons the call (`Stopped`).
    """

    def __init__(
        self,
        decoders: list[FrameDecoder],
        on_audio: Callable[[int, np.ndarray], None],
        should_stop: Callable[[], bool] | None,
    ):
        self._detect_eos: Callable | None = None
        self._decoders = decoders
        self._on_audio = on_audio
        self._should_stop = should_stop
        self._pending = list(range(len(decoders)))  # items NeMo still calls, in its order
        self._cursor = 0

    @contextlib.contextmanager
    def installed(self, model) -> Iterator[None]:
        """Instance attributes over the model's own, removed on the way out."""
        self._detect_eos = model.detect_eos
        helper = model._codec_helper
        model.detect_eos = self
        model._codec_helper = _SkipWholeDecode(helper)
        try:
            yield
        finally:
            del model.detect_eos
            model._codec_helper = helper

    def __call__(self, codes: torch.Tensor, argmax: torch.Tensor, method) -> int | float:
        end = self._detect_eos(codes, argmax, method)
        if self._cursor == 0 and self._should_stop is not None and self._should_stop():
            raise Stopped
        item = self._pending[self._cursor]
        if end == float("inf"):
            self._emit(item, self._decoders[item].push(codes))
            self._cursor += 1
        else:  # NeMo keeps the frames before the EOS frame and calls this item no more
            self._emit(item, self._decoders[item].finish(codes[:, : int(end)]))
            del self._pending[self._cursor]
        if self._cursor >= len(self._pending):
            self._cursor = 0
        return end

    def finish(self) -> None:
        """After the call: items that never sampled EOS ran to the step limit; flush them."""
        for item in self._pending:
            self._emit(item, self._decoders[item].finish())
        self._pending = []

    def _emit(self, item: int, audio: np.ndarray | None) -> None:
        if audio is not None and audio.size:
            self._on_audio(item, audio)


class _SkipWholeDecode:
    """`model._codec_helper` while a tap is installed: the final decode returns no audio."""

    def __init__(self, helper):
        self._helper = helper

    def codes_to_audio(self, codes: torch.Tensor, codes_len: torch.Tensor):
        empty = torch.zeros(codes.shape[0], 0, device=codes.device)
        return empty, torch.zeros_like(codes_len), codes

    def __getattr__(self, name: str):
        return getattr(self._helper, name)
