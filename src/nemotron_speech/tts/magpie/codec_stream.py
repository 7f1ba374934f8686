"""Exact chunk-by-chunk decoding through a causal HiFi-GAN codec decoder (NanoCodec's kind).

NeMo's `CausalHiFiGANDecoder` decodes a whole utterance: every causal convolution pads its input
with zeros on the left. Decoding a chunk here runs the same modules, but each causal layer gets
the last inputs it saw in the previous chunk in place of those zeros (the chunk's own first
chunk starts from zeros, as the whole decode does). Every output sample then sees exactly the
inputs it sees in the whole decode, so the chunks concatenate to NeMo's own audio (up to float
rounding), and each chunk costs only its own frames: nothing is decoded twice.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import parametrize

State = list[torch.Tensor]  # one chunk's carried inputs, one tensor per causal layer, in order


def supports(decoder) -> bool:
    """Whether `decoder` is a causal HiFi-GAN decoder this module can stream exactly."""
    from nemo.collections.tts.modules.audio_codec_modules import (
        CausalConv1dNorm,
        CausalHiFiGANDecoder,
    )

    if not isinstance(decoder, CausalHiFiGANDecoder):
        return False
    # carried inputs stand in for zero padding on the left, and nothing may be cut from the left
    convs = [m for m in decoder.modules() if isinstance(m, CausalConv1dNorm)]
    ups = decoder.up_sample_conv_layers
    return all(c.extra_pad_mode == "constant" and c.conv.stride[0] == 1 for c in convs) and all(
        up.padding_left == 0 for up in ups
    )


class CodecStream:
    """Decodes chunks of codec frames for a batch of utterances, each with its own `State`."""

    def __init__(self, codec_helper):
        self._helper = codec_helper  # infer_batch's: its codebook converter, if any, applies
        self._codec = codec_helper.codec_model
        self._decoder = self._codec.audio_decoder

    def decode(
        self, codes: torch.Tensor, states: list[State | None]
    ) -> tuple[torch.Tensor, list[State]]:
        """Audio (batch, frames x samples per frame) of codes (batch, codebooks, frames) that
        follow each item's `states` (None: the item's first chunk), and the states after them."""
        lengths = torch.full((codes.shape[0],), codes.shape[-1], device=codes.device)
        converter = self._helper.codec_converter
        if converter is not None:
            codes = converter.convert_new_to_original(audio_tokens=codes, audio_lens=lengths)
        carry = _Carry(_stack(states))
        # the codec runs in float32 whatever the caller's autocast (NeMo's CodecHelper does too);
        # weight-normed weights are computed once per chunk, not once per call of each layer
        with torch.autocast(codes.device.type, enabled=False), parametrize.cached():
            x = self._codec.dequantize(tokens=codes, tokens_len=lengths).to(self._codec.dtype)
            audio = self._forward(x, carry)
        return audio, [[s[i : i + 1] for s in carry.new] for i in range(codes.shape[0])]

    def _forward(self, x: torch.Tensor, carry: _Carry) -> torch.Tensor:
        """`CausalHiFiGANDecoder.forward`, layer by layer, with carried left context."""
        decoder = self._decoder
        out = _conv(decoder.pre_conv, x, carry)
        layers = zip(
            decoder.activations, decoder.up_sample_conv_layers, decoder.res_layers, strict=True
        )
        for activation, up, residual in layers:
            out = _transposed(up, activation(out), carry)
            out = _residual_layer(residual, out, carry)
        out = _conv(decoder.post_conv, decoder.post_activation(out), carry)
        return decoder.out_activation(out)[:, 0, :]


class _Carry:
    """Hands each causal layer its carried inputs, in the order the layers run."""

    def __init__(self, old: State | None):
        self._old = old
        self._next = 0
        self.new: State = []

    def prepend(self, x: torch.Tensor, context: int) -> torch.Tensor:
        """x with `context` carried inputs in front; remembers x's last `context` inputs."""
        if context == 0:
            return x
        if self._old is None:  # first chunk: the zeros the whole decode pads with
            old = x.new_zeros(x.shape[0], x.shape[1], context)
        else:
            old = self._old[self._next]
        self._next += 1
        full = torch.cat([old, x], dim=-1)
        self.new.append(full[..., -context:])
        return full


def _stack(states: list[State | None]) -> State | None:
    if states[0] is None:
        return None
    return [torch.cat(layer, dim=0) for layer in zip(*states, strict=True)]


def _conv(conv, x: torch.Tensor, carry: _Carry) -> torch.Tensor:
    """A stride-1 `CausalConv1dNorm`: its left padding is its receptive field."""
    context = int(conv.padding_total)
    full = carry.prepend(x, context)
    lengths = torch.full((x.shape[0],), full.shape[-1], device=x.device)
    return conv(inputs=full, input_len=lengths)[..., context:]


def _transposed(up, x: torch.Tensor, carry: _Carry) -> torch.Tensor:
    """A `CausalConvTranspose1dNorm` (right side trimmed): an output sample depends on the
    inputs up to its own and ceil((kernel - stride) / stride) before it."""
    kernel, stride = up.conv.kernel_size[0], up.conv.stride[0]
    context = math.ceil((kernel - stride) / stride)
    full = carry.prepend(x, context)
    lengths = torch.full((x.shape[0],), full.shape[-1] * stride, device=x.device)
    return up(inputs=full, input_len=lengths)[..., context * stride :]


def _residual_layer(layer, x: torch.Tensor, carry: _Carry) -> torch.Tensor:
    """`HiFiGANResLayer`: the mean of its blocks, each a chain of `ResidualBlock`s."""
    branches = []
    for block in layer.res_blocks:
        out = x
        for residual in block.res_blocks:
            h = _conv(residual.input_conv, residual.input_activation(out), carry)
            h = _conv(residual.skip_conv, residual.skip_activation(h), carry)
            out = out + residual.dropout(h)
        branches.append(out)
    return sum(branches) / len(branches)
