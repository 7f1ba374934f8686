"""One Magpie frame's GPU work at fixed shapes: NeMo 3.0's arithmetic, restated for static buffers.

Each function here computes what a NeMo method computes (named in its docstring), with the same
operations on the same shapes wherever the shapes can stay fixed, so that a CUDA graph can
replay it (`graphs.StaticSteps` installs them):

- `decoder_step`: the decoder for the newest position only, on a preallocated self-attention
  cache (NeMo appends to its cache with `torch.cat`, a new shape every frame);
- `sample_local` / `sample_parallel`: the local transformer's and the parallel sampler's
  choices, with NeMo's per-item rules (EOS forbidden or forced for some items, special tokens
  never) as mask tensors (`Rules`) instead of Python loops over item indices.

`torch.multinomial(probs, 1)` is written out as what it runs (no replacement, one sample: an
exponential draw of the same shape, a division, an argmax): the same random numbers and the same
result, without the validity checks that read the probabilities back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Rules:
    """NeMo's per-item rules for one sampling call: `unfinished` rows may not end (EOS
    forbidden), `finished` rows must (EOS forced), `forbid_eos` (0-dim): no row may end yet."""

    unfinished: torch.Tensor  # (rows,) bool
    finished: torch.Tensor  # (rows,) bool
    forbid_eos: torch.Tensor  # () bool


@dataclass(frozen=True)
class Vocabulary:
    """One codebook's tokens as NeMo's sampler treats them."""

    forbidden: torch.Tensor  # (V,) bool: never sampled (the special tokens but EOS)
    forbidden_late: torch.Tensor  # (V,) bool: also forbidden while `forbid_eos` (EOS)
    eos: torch.Tensor  # (V,) bool
    only_eos: torch.Tensor  # (V,) float: a finished row's logits, 0 at EOS, -inf elsewhere

    @classmethod
    def of(cls, model, device: torch.device) -> Vocabulary:
        from nemo.collections.tts.modules.magpietts_modules import SpecialAudioToken

        size = model.num_all_tokens_per_codebook
        tokens = torch.arange(size, device=device)
        never = SpecialAudioToken.get_forbidden_tokens(model.codebook_size, forbid_audio_eos=False)
        early = SpecialAudioToken.get_forbidden_tokens(model.codebook_size, forbid_audio_eos=True)
        eos = tokens == model.audio_eos_id
        forbidden = torch.isin(tokens, torch.tensor(never, device=device))
        late = torch.isin(tokens, torch.tensor(early, device=device)) & ~forbidden
        only_eos = torch.full((size,), NEG_INF, device=device).masked_fill(eos, 0.0)
        return cls(forbidden, late, eos, only_eos)


def pick(logits, rules: Rules, vocabulary: Vocabulary, topk: int, temperature: float, greedy: bool):
    """One codebook's token for every row: the part of NeMo's `sample_codes_from_logits` and
    `LocalTransformerHelper.sample_autoregressive` after the logits (same values, same draws)."""
    logits = logits.masked_fill(rules.unfinished[:, None] & vocabulary.eos, NEG_INF)
    only_eos = vocabulary.only_eos.to(logits.dtype)
    logits = torch.where(rules.finished[:, None], only_eos, logits)
    late = vocabulary.forbidden_late & rules.forbid_eos
    logits = logits.masked_fill(vocabulary.forbidden | late, NEG_INF)
    threshold = torch.topk(logits, topk, dim=-1)[0][:, -1].unsqueeze(-1)
    rescored = logits.masked_fill(logits < threshold, NEG_INF)
    if greedy:
        return rescored.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(rescored / temperature, dim=-1)
    draws = torch.empty_like(probs).exponential_(1)  # torch.multinomial(probs, 1), unchecked
    return torch.argmax(probs / draws, dim=-1, keepdim=True)


def sample_parallel(model, logits, rules: Rules, vocabulary: Vocabulary, temperature, topk):
    """`MagpieTTSModel.sample_codes_from_logits`: (B, codebooks * V * stacking) -> (B, C, S)."""
    width = model.num_all_tokens_per_codebook
    codebooks = model.num_audio_codebooks
    frames = []
    for stack in range(model.frame_stacking_factor):
        picks = []
        for codebook in range(codebooks):
            start = (codebook + codebooks * stack) * width
            part = logits[:, start : start + width]
            picks.append(pick(part, rules, vocabulary, topk, temperature, greedy=False))
        frames.append(torch.cat(picks, dim=1))
    return torch.stack(frames, dim=2)


def sample_local(helper, dec_output, rules: Rules, vocabulary: Vocabulary, options: dict):
    """`LocalTransformerHelper.sample_autoregressive` (`options`: its keyword arguments but the
    item rules): the local transformer is NeMo's own module, run on the same shapes."""
    temperature, cfg_scale = options["temperature"], options["cfg_scale"]
    use_cfg = options["use_cfg"]
    transformer = helper.local_transformer
    transformer.reset_cache(use_cache=options["use_kv_cache"])
    inputs = helper.local_transformer_in_projection(dec_output.unsqueeze(1))
    half = inputs.size(0) // 2
    picks = []
    for codebook in range(helper.num_audio_codebooks * helper.frame_stacking_factor):
        mask = torch.ones(inputs.size(0), inputs.size(1), device=inputs.device)
        output = transformer(inputs, mask)["output"]
        last = helper.local_transformer_audio_out_projection(output[:, -1, :])
        logits = helper.local_transformer_out_projections[codebook](last)
        if use_cfg:
            logits[:half] = cfg_scale * logits[:half] + (1.0 - cfg_scale) * logits[half:]
        if options["sanitize_logits"]:
            logits = torch.nan_to_num(logits, nan=0.0, posinf=100.0, neginf=-100.0)
            logits = logits.clamp(min=-100.0, max=100.0)
        chosen = pick(logits, rules, vocabulary, options["topk"], temperature, temperature <= 0.0)
        if use_cfg:
            chosen[half:] = chosen[:half]
        picks.append(chosen)
        following = helper.audio_embeddings[codebook](chosen.squeeze(-1)).unsqueeze(1)
        following = helper.local_transformer_in_projection(helper.audio_in_projection(following))
        inputs = torch.cat([inputs, following], dim=1)
    codes = torch.cat(picks, dim=1)
    codes = codes.reshape(-1, helper.frame_stacking_factor, helper.num_audio_codebooks)
    codes = codes.permute(0, 2, 1)
    return codes[:half] if use_cfg else codes


@dataclass
class SelfCache:
    """The decoder's self-attention keys and values for `length` positions (per layer
    (rows, length, heads, head dim)), and the step's inputs: the newest position's embedding
    `x` (rows, 1, d_model) and its index `position` (1,)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    x: torch.Tensor
    position: torch.Tensor
    key_positions: torch.Tensor  # arange(length)
    ones: torch.Tensor  # (rows, 1) bool: the FFN's mask, every position real

    @property
    def length(self) -> int:
        return self.key_positions.numel()

    def serves(self, embedded: torch.Tensor, keys_dtype: torch.dtype, length: int) -> bool:
        """Whether these buffers fit `embedded`'s rows and dtype, keys of `keys_dtype`, and
        `length` positions."""
        kind = (self.x.size(0), self.x.dtype, self.keys[0].dtype)
        return kind == (embedded.size(0), embedded.dtype, keys_dtype) and self.length >= length


@dataclass
class TextCache:
    """Cross-attention over the text padded to a bucket: keys and values per layer
    (rows, bucket, heads, head dim), the text's mask (rows, 1, 1, bucket) and NeMo's attention
    prior for the next step (rows, 1, bucket)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    prior: torch.Tensor


def decoder_step(model, cache: SelfCache, text: TextCache, length: int, prior_layers):
    """`MagpieTTSModel.forward` for the newest position when the decoder's KV cache is on: what
    `transformer_2501.Transformer.forward` computes for that position (its earlier positions
    only feed the caches). Attention reads the first `length` cached positions; `prior_layers`
    says which layers apply the prior. Returns (logits, output, cross-attention probabilities
    of every layer) at that position."""
    decoder = model.decoder
    x = cache.x
    if decoder.use_learnable_pos_emb:  # the released checkpoint's decoder has them
        x = x + decoder.position_embeddings(cache.position)
    x = decoder.dropout(x)
    keep = cache.key_positions[:length] <= cache.position
    rows = x.size(0)
    probs = []
    for index, layer in enumerate(decoder.layers):
        attention = layer.self_attention
        qkv = attention.qkv_net(layer.norm_self(x))
        qkv = qkv.reshape(rows, 1, 3, attention.n_heads, attention.d_head)
        q, k, v = (part.squeeze(2) for part in qkv.chunk(3, dim=2))
        keys, values = cache.keys[index], cache.values[index]
        keys.index_copy_(1, cache.position, k)
        values.index_copy_(1, cache.position, v)
        y, _ = _attend(q, keys[:, :length], values[:, :length], attention.scale, keep)
        x = x + attention.dropout(attention.o_net(y))
        cross = layer.cross_attention
        q = cross.q_net(layer.norm_xattn_query(x)).reshape(rows, 1, cross.n_heads, cross.d_head)
        prior = None
        if prior_layers[index]:
            prior = text.prior[:, None] + torch.finfo(text.prior.dtype).tiny
        y, prob = _attend(q, text.keys[index], text.values[index], cross.scale, text.mask, prior)
        x = x + cross.dropout(cross.o_net(y))
        probs.append(prob)
        x = x + layer.pos_ff(layer.norm_pos_ff(x), cache.ones)
    x = decoder.dropout_out(decoder.norm_out(x))
    return (model.final_proj(x), x, *probs)


def _attend(q, keys, values, scale: float, keep, prior=None):
    """`transformer_2501.Attention.attn_naive` for one query position (eval): q (R, 1, H, D),
    keys and values (R, T, H, D); `keep` (broadcast to (R, H, 1, T)) the keys that count."""
    q, keys, values = q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2)
    score = torch.matmul(q, keys.transpose(2, 3)) * scale
    score = score.masked_fill(~keep, NEG_INF)
    prob = F.softmax(score, dim=-1)
    if prior is not None:
        prob = prob * prior
        prob = prob / prob.sum(dim=-1, keepdim=True)
    prob = prob.masked_fill(~keep, 0.0)
    y = torch.matmul(prob, values)
    return y.transpose(1, 2).contiguous().view(q.size(0), 1, -1), prob
