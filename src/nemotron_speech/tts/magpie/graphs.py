"""Magpie's per-frame work as fixed-shape steps, replayed from CUDA graphs.

Per codec frame, NeMo's `infer_batch` runs the decoder (12 layers at full size) over the whole
sequence with a KV cache grown by `torch.cat`, then the local transformer and a sampler per
codebook: well over a thousand small kernels. On an H200 a frame took ~29 ms at batch 1, almost
all of it launching them. `StaticSteps` keeps NeMo's loop, so its attention prior, EOS rules and
bookkeeping run unchanged, and stands in for the calls that do the per-frame GPU work
(instance attributes for one call, like `streaming.DecodeTap`):

- `model.forward`: NeMo's own first call fills the decoder's caches (the speaker context and the
  text); they are copied into static buffers, and every later call runs `steps.decoder_step`
  for the newest position only;
- `model._lt_helper.sample_autoregressive` and `model.sample_codes_from_logits`:
  `steps.sample_local` and `steps.sample_parallel`, the item rules as masks;
- NeMo's attention-prior bookkeeping (`get_most_attended_text_timestep`,
  `construct_inference_prior`) runs as it is, on host copies of its tensors.

Each is a `_Step` keyed by what fixes its shapes (rows; for the decoder the attention length,
rounded up to `LENGTH_STEP` positions, the text bucket and the prior's layers), run eagerly
(`capture=False`: any device, how the CPU tests check the arithmetic) or captured once and
replayed (`capture=True`, CUDA). A graph replays the eager step's kernels on the same buffers,
so both give the same codes for a seed; against NeMo's own path the attention sums run over
padded lengths, which can move a logit by a rounding error (see docs/tts.md).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch

from nemotron_speech.tts.magpie.steps import (
    Rules,
    SelfCache,
    TextCache,
    Vocabulary,
    decoder_step,
    sample_local,
    sample_parallel,
)

LENGTH_STEP = 128  # attention length buckets: a graph per 128 positions (~6 s of audio)
MIN_TEXT_BUCKET = 32  # text tokens; buckets double from here


def unsupported(model) -> str | None:
    """Why the static decoder step cannot stand in for this model's decoder, or None."""
    if model.model_type == "multi_encoder_context_tts":
        return "a multi-encoder model (its decoder layers read different encoders)"
    for layer in model.decoder.layers:
        if layer.use_moe:
            return "a mixture-of-experts decoder"
        if not (layer.has_xattn and layer.self_attention.is_causal):
            return "a decoder layer without causal self-attention and cross-attention"
        kernels = {layer.pos_ff.proj.conv.kernel_size[0], layer.pos_ff.o_net.conv.kernel_size[0]}
        if kernels != {1}:
            return f"a decoder FFN kernel of {max(kernels)} (the static step computes one position)"
    return None


class StaticSteps:
    """Fixed-shape decoder and sampler steps for a `MagpieTTSModel`; `capture` replays them
    from CUDA graphs (a model on a CUDA device)."""

    def __init__(self, model, capture: bool):
        reason = unsupported(model)
        if reason:
            raise ValueError(f"static decoder steps do not support {reason}")
        self.device = next(model.parameters()).device
        if capture and self.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.model = model
        self._capture = _Capture(self.device) if capture else None
        self._vocabulary = Vocabulary.of(model, self.device)
        self._samplers: dict[tuple, _Step] = {}
        self._decoders: dict[tuple, _Step] = {}
        self._cache: SelfCache | None = None
        self._texts: dict[int, TextCache] = {}
        self._text: TextCache | None = None
        self._text_length = 0
        self._copies: list[tuple[torch.Tensor, torch.Tensor]] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """For the length of one `infer_batch` call; the model's own methods come back after."""
        model = self.model
        if not model.use_kv_cache_for_inference:
            raise ValueError("static decoder steps stand in for NeMo's KV-cached decoder calls")
        helper = model._lt_helper
        patches = {
            "forward": functools.partial(self._forward, model.forward),
            "sample_codes_from_logits": self._sample_parallel,
            # NeMo's per-item attention-prior bookkeeping: Python loops that read one value at
            # a time, here from host copies (the same code and values, no GPU launch and wait
            # per value); the prior it makes reaches the GPU in one copy (`_step`)
            "get_most_attended_text_timestep": self._on_host(model.get_most_attended_text_timestep),
            "construct_inference_prior": self._on_host(model.construct_inference_prior),
        }
        for name, value in patches.items():
            setattr(model, name, value)
        model._lt_helper = _LocalSampler(self, helper)
        on_device = contextlib.nullcontext()
        if self._capture is not None:  # graphs are captured on the current device
            on_device = torch.cuda.device(self.device)
        try:
            with on_device:
                yield
        finally:
            for name in patches:
                delattr(model, name)
            model._lt_helper = helper
            self._copies = []

    def _forward(self, nemo_forward: Callable, **inputs):
        if not self.model.decoder.layers[0].self_attention.cache["is_initialized"]:
            result = nemo_forward(**inputs)  # the context and the BOS frame, all at once
            self._load(inputs["dec_input_embedded"], inputs["cond_mask"])
            return result
        return self._step(inputs["dec_input_embedded"], inputs["attn_prior"])

    def _on_host(self, method: Callable) -> Callable:
        def on_host(**arguments):
            return method(**{name: self._host(value) for name, value in arguments.items()})

        return on_host

    def _host(self, value):
        """A host copy of a tensor (of the last two asked for: text lengths and scores are asked
        for twice a step), anything else as it is."""
        if not isinstance(value, torch.Tensor):
            return value
        for tensor, copy in self._copies:
            if tensor is value:
                return copy
        copy = value.cpu()
        self._copies = [*self._copies[-1:], (value, copy)]
        return copy

    def _load(self, embedded: torch.Tensor, text_mask: torch.Tensor) -> None:
        """Copy what NeMo's first call put in the decoder's caches into the static buffers."""
        layers = self.model.decoder.layers
        first = layers[0].self_attention.cache["self_k"]
        rows, filled = embedded.shape[:2]
        limit = filled + self.model.inference_parameters.max_decoder_steps
        cache = self._cache
        if cache is None or not cache.serves(embedded, first.dtype, limit):
            length = _round_up(limit, LENGTH_STEP)
            self._cache = cache = _self_cache(layers, length, first, embedded)
            self._decoders.clear()
            self._texts.clear()
        for layer, keys, values in zip(layers, cache.keys, cache.values, strict=True):
            keys[:, :filled].copy_(layer.self_attention.cache["self_k"])
            values[:, :filled].copy_(layer.self_attention.cache["self_v"])
        self._text_length = length = text_mask.size(1)
        bucket = max(MIN_TEXT_BUCKET, 1 << (length - 1).bit_length())
        cross = layers[0].cross_attention.cache["cross_k"]
        text = self._texts.get(bucket)
        if text is None or text.keys[0].dtype != cross.dtype:
            self._texts[bucket] = text = _text_cache(layers, rows, bucket, cross)
            # steps hold the buffers they were made with
            self._decoders = {key: step for key, step in self._decoders.items() if key[1] != bucket}
        for layer, keys, values in zip(layers, text.keys, text.values, strict=True):
            keys[:, :length].copy_(layer.cross_attention.cache["cross_k"])
            values[:, :length].copy_(layer.cross_attention.cache["cross_v"])
        text.mask.zero_()
        text.mask[:, 0, 0, :length].copy_(text_mask)
        self._text = text

    def _step(self, embedded: torch.Tensor, attn_prior):
        """Decoder outputs for the newest position, shaped as NeMo's `forward` returns them."""
        cache, text, length = self._cache, self._text, self._text_length
        position = embedded.size(1) - 1
        if position >= cache.length:
            raise RuntimeError(f"decoder position {position} is past the static cache")
        cache.x.copy_(embedded[:, -1:])
        cache.position.fill_(position)
        layers = len(cache.keys)
        priors = attn_prior if isinstance(attn_prior, list) else [attn_prior] * layers
        given = [prior for prior in priors if prior is not None]
        if given:
            text.prior[:, :, :length].copy_(given[0])  # NeMo passes one tensor to every layer
        pattern = tuple(prior is not None for prior in priors)
        span = min(cache.length, _round_up(position + 1, LENGTH_STEP))
        key = (span, text.mask.size(-1), pattern, *_autocast(self.device))
        step = self._decoders.get(key)
        if step is None:
            run = functools.partial(decoder_step, self.model, cache, text, span, pattern)
            self._decoders[key] = step = _Step(run, self._capture)
        logits, output, *probs = step()
        probabilities = [
            {"self_attn_probabilities": None, "cross_attn_probabilities": [prob[..., :length]]}
            for prob in probs
        ]
        return logits, probabilities, output, None

    def sample_local(self, helper, dec_output, unfinished_items, finished_items, **options):
        forbid = options.pop("forbid_audio_eos", False)
        options = {**_LOCAL_DEFAULTS, **options}
        key = ("local", *dec_output.shape, dec_output.dtype, *sorted(options.items()))
        key += _autocast(self.device)
        step = self._samplers.get(key)
        if step is None:
            inputs = _Inputs(dec_output)
            vocabulary = self._vocabulary
            run = functools.partial(
                sample_local, helper, inputs.tensor, inputs.rules, vocabulary, options
            )
            self._samplers[key] = step = _Step(run, self._capture, inputs)
        step.inputs.load(dec_output, unfinished_items, finished_items, forbid)
        return step()[0].clone()  # NeMo keeps every frame's codes

    def _sample_parallel(
        self,
        all_code_logits_t,
        temperature=0.7,
        topk=80,
        unfinished_items=None,
        finished_items=None,
        forbid_audio_eos=False,
    ):
        key = ("parallel", *all_code_logits_t.shape, temperature, topk)
        key += (all_code_logits_t.dtype, *_autocast(self.device))
        step = self._samplers.get(key)
        if step is None:
            inputs = _Inputs(all_code_logits_t)
            run = functools.partial(
                sample_parallel,
                self.model,
                inputs.tensor,
                inputs.rules,
                self._vocabulary,
                temperature,
                topk,
            )
            self._samplers[key] = step = _Step(run, self._capture, inputs)
        step.inputs.load(all_code_logits_t, unfinished_items, finished_items, forbid_audio_eos)
        return step()[0].clone()


# LocalTransformerHelper.sample_autoregressive's defaults (those infer_batch does not pass)
_LOCAL_DEFAULTS = {
    "temperature": 0.7,
    "topk": 80,
    "use_cfg": False,
    "cfg_scale": 1.0,
    "use_kv_cache": True,
    "sanitize_logits": False,
}


class _LocalSampler:
    """`model._lt_helper` while steps are installed: `sample_autoregressive` is a static step."""

    def __init__(self, steps: StaticSteps, helper):
        self._steps = steps
        self._helper = helper

    def sample_autoregressive(self, dec_output, unfinished_items=None, finished_items=None, **kw):
        return self._steps.sample_local(
            self._helper, dec_output, unfinished_items, finished_items, **kw
        )

    def __getattr__(self, name: str):
        return getattr(self._helper, name)


class _Inputs:
    """A sampler step's static inputs: the logits (or decoder output) and the item rules."""

    def __init__(self, like: torch.Tensor):
        rows = like.size(0)
        self.tensor = torch.empty_like(like, memory_format=torch.contiguous_format)
        self._flags = torch.zeros(2 * rows + 1, dtype=torch.bool, device=like.device)
        self.rules = Rules(self._flags[:rows], self._flags[rows:-1], self._flags[-1])

    def load(self, tensor: torch.Tensor, unfinished, finished, forbid_eos: bool) -> None:
        rows = self.tensor.size(0)
        flags = torch.zeros(2 * rows + 1, dtype=torch.bool)
        flags[list(unfinished or ())] = True
        flags[[rows + item for item in finished or ()]] = True
        flags[-1] = bool(forbid_eos)
        self._flags.copy_(flags)
        self.tensor.copy_(tensor)


class _Step:
    """A fixed-shape step: `run()` reads static tensors and returns its outputs. Without a
    `capture` every call runs it; with one, the first call captures it (its outputs copied into
    buffers made outside the graph's pool, the random generator's state put back after the
    warm-up runs) and every call replays the graph."""

    def __init__(self, run: Callable, capture: _Capture | None, inputs: _Inputs | None = None):
        self._run = run
        self._capture = capture
        self.inputs = inputs
        self._outputs: list[torch.Tensor] = []
        self._graph: torch.cuda.CUDAGraph | None = None

    def __call__(self) -> list[torch.Tensor]:
        if self._capture is None:
            return self._results()
        if self._graph is None:
            state = torch.cuda.get_rng_state()
            with _uncached_autocast():  # a graph must not read autocast's cached weight casts
                self._outputs = [output.clone() for output in self._results()]
                self._graph = self._capture(self._copy)
            torch.cuda.set_rng_state(state)  # the runs before the graph drew from it
        self._graph.replay()
        return self._outputs

    def _results(self) -> list[torch.Tensor]:
        results = self._run()
        return [results] if isinstance(results, torch.Tensor) else list(results)

    def _copy(self) -> None:
        for buffer, output in zip(self._outputs, self._results(), strict=True):
            buffer.copy_(output)


class _Capture:
    """Captures steps into CUDA graphs that share one memory pool, on one side stream."""

    def __init__(self, device: torch.device):
        self._pool = torch.cuda.graph_pool_handle()
        self._stream = torch.cuda.Stream(device)

    def __call__(self, step: Callable[[], None]) -> torch.cuda.CUDAGraph:
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            step()  # first on this stream: its lazy state (cuBLAS workspace) stays out of the graph
        graph = torch.cuda.CUDAGraph()
        # thread_local: the bot's ASR keeps using the GPU from its own thread meanwhile
        mode = "thread_local"
        with torch.cuda.graph(graph, self._pool, self._stream, capture_error_mode=mode):
            step()
        torch.cuda.current_stream().wait_stream(self._stream)
        return graph


def _self_cache(layers, length: int, keys_like: torch.Tensor, embedded: torch.Tensor):
    """Zeroed self-attention buffers like NeMo's cached keys, for `embedded`'s rows."""
    attention = layers[0].self_attention
    rows, _, d_model = embedded.shape
    shape = (rows, length, attention.n_heads, attention.d_head)
    keys = [keys_like.new_zeros(shape) for _ in layers]
    values = [keys_like.new_zeros(shape) for _ in layers]
    x = embedded.new_zeros(rows, 1, d_model)
    device = embedded.device
    position = torch.zeros(1, dtype=torch.long, device=device)
    positions = torch.arange(length, device=device)
    ones = torch.ones(rows, 1, dtype=torch.bool, device=device)
    return SelfCache(keys, values, x, position, positions, ones)


def _text_cache(layers, rows: int, bucket: int, like: torch.Tensor) -> TextCache:
    cross = layers[0].cross_attention
    shape = (rows, bucket, cross.n_heads, cross.d_head)
    keys = [like.new_zeros(shape) for _ in layers]
    values = [like.new_zeros(shape) for _ in layers]
    mask = torch.zeros(rows, 1, 1, bucket, dtype=torch.bool, device=like.device)
    prior = torch.ones(rows, 1, bucket, device=like.device)  # NeMo's prior is float32
    return TextCache(keys, values, mask, prior)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _autocast(device: torch.device) -> tuple:
    """What autocast does to a step now: part of every step's key."""
    if not torch.is_autocast_enabled(device.type):
        return (None,)
    return (torch.get_autocast_dtype(device.type),)


def _uncached_autocast():
    device = "cuda"
    if not torch.is_autocast_enabled(device):
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.get_autocast_dtype(device), cache_enabled=False)
