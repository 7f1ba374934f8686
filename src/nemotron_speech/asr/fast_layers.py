"""Streaming-step versions of the conformer's attention and convolution modules.

NeMo's modules compute the right thing in a shape that is slow at large batches of short chunks
(a later step has two new frames per stream and ~70 cached ones). Profiled on an H200 at 1,024
streams (bf16), attention and convolution took 62 and 28 of a 102 ms encoder step, mostly in
copies rather than arithmetic:

- the relative-position term multiplies every stream's queries by a position matrix shared by
  the batch; `torch.matmul` broadcasts it by materialising one copy per stream and head;
- keys and values are transposed views, so the score and value products copy them first;
- the convolution module runs its pointwise layers as `Conv1d` in [B, C, T] layout, where cuDNN
  converts layouts around old kernels.

The classes here compute the same function for a streaming step (a `cache` is given): the
position term as one matrix product per head over all streams' queries, scores and values
through `scaled_dot_product_attention` on the strided views (the position term enters as its
additive bias), the next attention cache as a view of the keys (NeMo concatenates twice), and the
pointwise convolutions as `linear` on [B, T, C]. Every other call (no cache: offline decoding,
training) runs NeMo's code unchanged. `use_fast_layers` swaps the classes of a model's modules in
place, so weights, devices and dtypes stay as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nemo.collections.asr.parts.submodules.conformer_modules import ConformerConvolution
from nemo.collections.asr.parts.submodules.multi_head_attention import (
    INF_VAL,
    RelPositionMultiHeadAttention,
)


class StreamingRelPositionAttention(RelPositionMultiHeadAttention):
    """Relative-position multi-head attention with a fast path for cached streaming steps."""

    def forward(self, query, key, value, mask, pos_emb, cache=None):
        if cache is None or self.training or pos_emb.size(0) != 1 or torch.is_autocast_enabled():
            return super().forward(query, key, value, mask, pos_emb, cache=cache)
        batch, new_frames, _ = query.shape
        keep = new_frames - self.cache_drop_size
        key = torch.cat([cache, key], dim=1)
        next_cache = key[:, keep : keep + cache.size(1)]  # == NeMo's second concatenation
        q = self.linear_q(query).view(batch, new_frames, self.h, self.d_k)
        k = self.linear_k(key).view(batch, -1, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(key).view(batch, -1, self.h, self.d_k).transpose(1, 2)
        bias = self._position_scores(q + self.pos_bias_v, pos_emb)[..., : k.size(2)]
        bias = bias / self.s_d_k
        if mask is not None:
            mask = mask.unsqueeze(1)
            bias = bias.masked_fill(mask, -INF_VAL)
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        out = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bias)
        if mask is not None:  # NeMo zeroes rows with nothing to attend to
            out = out.masked_fill(mask.all(dim=-1, keepdim=True), 0.0)
        out = out.transpose(1, 2).reshape(batch, new_frames, self.h * self.d_k)
        return self.linear_out(out), next_cache

    def _position_scores(self, q_v: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        """`rel_shift(q_v @ p^T)` as [B, H, T, P], with the batch-shared p multiplied per head."""
        batch, frames, heads, width = q_v.shape
        p = self.linear_pos(pos_emb).view(-1, heads, width).permute(1, 2, 0)  # [H, d, P]
        queries = q_v.permute(2, 0, 1, 3).reshape(heads, batch * frames, width)
        scores = torch.bmm(queries, p).view(heads, batch, frames, -1).transpose(0, 1)
        return self.rel_shift(scores.contiguous())


class StreamingConformerConvolution(ConformerConvolution):
    """Conformer convolution module with pointwise layers as `linear` for cached streaming
    steps."""

    def forward(self, x, pad_mask=None, cache=None):
        if cache is None or self.training:
            return super().forward(x, pad_mask=pad_mask, cache=cache)
        x = F.linear(x, self.pointwise_conv1.weight.squeeze(-1), self.pointwise_conv1.bias)
        if self.pointwise_activation == "glu_":
            x = F.glu(x, dim=-1)
        else:
            x = self.pointwise_activation(x.transpose(1, 2)).transpose(1, 2)
        if pad_mask is not None:
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        x, cache = self.depthwise_conv(x.transpose(1, 2), cache=cache)
        if self.norm_type == "layer_norm":
            x = self.batch_norm(x.transpose(1, 2))
        else:
            x = self.batch_norm(x).transpose(1, 2)
        x = self.activation(x)
        x = F.linear(x, self.pointwise_conv2.weight.squeeze(-1), self.pointwise_conv2.bias)
        return x, cache


_FAST = {
    RelPositionMultiHeadAttention: StreamingRelPositionAttention,
    ConformerConvolution: StreamingConformerConvolution,
}


def use_fast_layers(encoder, enabled: bool = True) -> int:
    """Swap the encoder's attention and convolution modules to (or back from) their streaming
    versions; returns how many modules now run the requested version."""
    back = {fast: stock for stock, fast in _FAST.items()}
    swapped = 0
    for module in encoder.modules():
        target = (_FAST if enabled else back).get(type(module))
        if target is not None:
            module.__class__ = target
            swapped += 1
    return swapped
