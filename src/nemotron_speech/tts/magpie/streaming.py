"""Audio out of Magpie while it is still generating: codec frames decoded as they are sampled.

`MagpieTTSModel.infer_batch` samples one codec frame per decoder step and decodes all of them once
at the end; NeMo has no per-step callback. Its loop calls `detect_eos(codes, argmax, method)` once
per step for every item that has not ended yet, in item order, with that item's new frame(s):
`DecodeTap` stands in for that method during a call, collects each item's frames, and at the end
of every step decodes the chunks that are due, all items of one size in one batched call.
`generate_speech` (NeMo's chunked path) calls `detect_eos` the same way. While the tap is
installed, `infer_batch`'s own decode of the whole batch at the end is skipped: the chunks
already decoded every frame.

With a causal decoder (NanoCodec's) chunks are decoded by `codec_stream.CodecStream`, exactly and
once each; any other decoder needs the frames after a sample too, so an item's audio is then
decoded whole when it ends (one chunk per sentence).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from itertools import groupby

import numpy as np
import torch

from nemotron_speech.tts.magpie.codec_stream import CodecStream, State


class Stopped(Exception):
    """Raised inside NeMo's loop to abandon a generation (the caller asked to stop)."""


class _Item:
    """One utterance's frames not yet decoded, and its decoder state."""

    def __init__(self, first: int):
        self.frames: list[torch.Tensor] = []  # each (codebooks, n)
        self.pending = 0
        self.due = first  # frames that make the next chunk
        self.state: State | None = None
        self.ended = False

    def push(self, codes: torch.Tensor) -> None:
        if codes.shape[-1]:
            self.frames.append(codes)
            self.pending += codes.shape[-1]

    def take(self) -> torch.Tensor:
        codes = torch.cat(self.frames, dim=-1)
        self.frames, self.pending = [], 0
        return codes


class DecodeTap:
    """Stands in for `model.detect_eos` during one `infer_batch` call (`installed`).

    `on_audio(item, samples)` gets every chunk as soon as it is decoded: the first after `first`
    frames, then every `chunk` frames, and the rest when the item ends. `should_stop()` is asked
    once per decoder step; a True abandons the call (`Stopped`). `stream=None` (a decoder that is
    not causal) decodes each item whole when it ends.
    """

    def __init__(
        self,
        items: int,
        codec_helper,
        stream: CodecStream | None,
        on_audio: Callable[[int, np.ndarray], None],
        should_stop: Callable[[], bool] | None,
        first: int,
        chunk: int,
    ):
        self._items = [_Item(first) for _ in range(items)]
        self._helper = codec_helper
        self._stream = stream
        self._on_audio = on_audio
        self._should_stop = should_stop
        self._chunk = chunk
        self._pending = list(range(items))  # items NeMo still calls, in its order
        self._cursor = 0
        self._detect_eos: Callable | None = None

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
        index = self._pending[self._cursor]
        item = self._items[index]
        if end == float("inf"):
            item.push(codes)
            self._cursor += 1
        else:  # NeMo keeps the frames before the EOS frame and calls this item no more
            item.push(codes[:, : int(end)])
            item.ended = True
            del self._pending[self._cursor]
        if self._cursor >= len(self._pending):  # the step is over
            self._cursor = 0
            self._decode_due()
        return end

    def finish(self) -> None:
        """After the call: items that never sampled EOS ran to the step limit; flush them."""
        for index in self._pending:
            self._items[index].ended = True
        self._pending = []
        self._decode_due()

    def _decode_due(self) -> None:
        due = [
            i
            for i, item in enumerate(self._items)
            if item.pending and (item.ended or (self._stream and item.pending >= item.due))
        ]
        if self._stream is None:
            for i in due:
                codes = self._items[i].take()[None]
                lengths = torch.tensor([codes.shape[-1]], device=codes.device)
                audio, _, _ = self._helper.codes_to_audio(codes, lengths)
                self._emit(i, audio[0].float().cpu().numpy())
            return

        def key(i: int) -> tuple[int, bool]:  # one batched decode per size and first/later
            return self._items[i].pending, self._items[i].state is None

        for _, group in groupby(sorted(due, key=key), key=key):
            group = list(group)
            items = [self._items[i] for i in group]
            codes = torch.stack([item.take() for item in items])
            audio, states = self._stream.decode(codes, [item.state for item in items])
            audio = audio.float().cpu().numpy()  # one copy (and wait) for the group
            for i, item, samples, state in zip(group, items, audio, states, strict=True):
                item.state, item.due = state, self._chunk
                self._emit(i, samples)

    def _emit(self, index: int, audio: np.ndarray) -> None:
        if audio.size:
            self._on_audio(index, audio)


class _SkipWholeDecode:
    """`model._codec_helper` while a tap is installed: the final decode returns no audio."""

    def __init__(self, helper):
        self._helper = helper

    def codes_to_audio(self, codes: torch.Tensor, codes_len: torch.Tensor):
        empty = torch.zeros(codes.shape[0], 0, device=codes.device)
        return empty, torch.zeros_like(codes_len), codes

    def __getattr__(self, name: str):
        return getattr(self._helper, name)
