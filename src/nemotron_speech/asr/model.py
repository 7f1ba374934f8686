"""Loading a cache-aware streaming FastConformer-RNNT `.nemo` and reading its streaming geometry."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from nemotron_speech.asr.errors import ModelLoadError, ModelNotFoundError
from nemotron_speech.protocol import SAMPLE_RATE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkGeometry:
    """Mel-frame sizes of one streaming step at one right context (NeMo's `streaming_cfg`)."""

    right_context: int
    first_chunk: int  # mel frames of a stream's first step (no pre-encode cache, drop 0)
    chunk: int  # new mel frames of every later step
    pre_encode_cache: int  # frames of history prepended to every later step
    drop_extra_pre_encoded: int  # encoder frames dropped from later steps' output
    min_first: int  # fewest frames the subsampler turns into an encoder frame (first step)
    hop_samples: int
    window_samples: int

    @property
    def chunk_ms(self) -> float:
        return self.chunk * self.hop_samples * 1000 / SAMPLE_RATE


def load_nemo_model(path: str | Path, device: str = "cpu"):
    """Restore a `.nemo` on the CPU, check it can stream, configure greedy batched RNNT decoding,
    then move it to `device` (loading on the CPU first avoids a GPU memory peak beside vLLM)."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(str(path))
    from nemo.collections.asr.models import ASRModel
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel("ERROR")
    try:
        model = ASRModel.restore_from(str(path), map_location="cpu")
    except Exception as exc:  # NeMo raises many types for a bad archive
        raise ModelLoadError(f"cannot load {path} as a NeMo model: {exc}") from exc
    _check_cache_aware(model, path)
    model.eval()
    configure_decoding(model)
    return model.to(torch.device(device))


def _check_cache_aware(model, path: Path) -> None:
    encoder = getattr(model, "encoder", None)
    contexts = getattr(encoder, "att_context_size_all", None)
    if not hasattr(model, "decoding") or not hasattr(model, "joint"):
        raise ModelLoadError(f"{path} is not an RNNT (transducer) model")
    conv = getattr(encoder, "conv_context_size", None)
    causal_conv = isinstance(conv, list | tuple) and len(conv) == 2 and conv[1] == 0
    limited = bool(contexts) and all(left >= 0 and right >= 0 for left, right, *_ in contexts)
    if not (limited and causal_conv and hasattr(encoder, "cache_aware_stream_step")):
        raise ModelLoadError(
            f"{path} is not a cache-aware streaming model (attention context {contexts}, "
            f"convolution context {conv}); use a FastConformer trained with limited attention "
            "context and causal convolutions, such as Nemotron Speech Streaming"
        )


def configure_decoding(model) -> None:
    """Greedy batched label-looping RNNT for NeMo's own decoding (the offline reference; the
    engine streams with `decoding`, on the same modules); timestamps off (they break hypothesis
    merging across streaming steps); NeMo's CUDA-graph decoding off (Blackwell needs it off)."""
    from omegaconf import open_dict

    config = copy.deepcopy(model.cfg.decoding)
    with open_dict(config):
        config.strategy = "greedy_batch"
        config.greedy.loop_labels = True
        config.greedy.use_cuda_graph_decoder = False
        config.compute_timestamps = False
        config.preserve_alignments = False
    model.change_decoding_strategy(config, verbose=False)


def supported_right_contexts(model) -> list[int]:
    return sorted({int(context[1]) for context in model.encoder.att_context_size_all})


def select_right_context(model, right_context: int | None) -> ChunkGeometry:
    """Make `right_context` the encoder's attention context and return its chunk geometry."""
    supported = supported_right_contexts(model)
    if right_context is None:
        right_context = int(model.encoder.att_context_size[1])
    if right_context not in supported:
        raise ModelLoadError(
            f"right context {right_context} is not supported by this model; choose one of "
            f"{supported}"
        )
    left = next(c[0] for c in model.encoder.att_context_size_all if c[1] == right_context)
    model.encoder.set_default_att_context_size([left, right_context])
    config = model.encoder.streaming_cfg
    preprocessor = model.cfg.preprocessor
    sampling = model.encoder.pre_encode.get_sampling_frames()
    return ChunkGeometry(
        right_context=right_context,
        first_chunk=_pair(config.chunk_size)[0],
        chunk=_pair(config.chunk_size)[1],
        pre_encode_cache=_pair(config.pre_encode_cache_size)[1],
        drop_extra_pre_encoded=int(config.drop_extra_pre_encoded),
        min_first=_pair(sampling)[0],
        hop_samples=int(preprocessor.window_stride * SAMPLE_RATE),
        window_samples=int(preprocessor.window_size * SAMPLE_RATE),
    )


def streaming_preprocessor(model) -> torch.nn.Module:
    """A copy of the model's mel front end with dither and padding off, as streaming needs."""
    from omegaconf import open_dict

    config = copy.deepcopy(model.cfg.preprocessor)
    with open_dict(config):
        config.dither = 0.0
        config.pad_to = 0
    if str(config.get("normalize", "NA")) not in ("NA", "None", "none", ""):
        raise ModelLoadError("per-utterance feature normalisation cannot be streamed")
    device = next(model.parameters()).device
    return model.from_config_dict(config).eval().to(device)


@torch.inference_mode()
def offline_token_ids(model, samples: torch.Tensor) -> tuple[list[int], str]:
    """Whole-utterance forward and greedy decode at the encoder's current attention context:
    the reference that streaming must equal token for token."""
    device = next(model.parameters()).device
    signal = samples.to(device)[None]
    encoded, encoded_len = model.forward(
        input_signal=signal, input_signal_length=torch.tensor([signal.shape[1]], device=device)
    )
    hypothesis = model.decoding.rnnt_decoder_predictions_tensor(
        encoded, encoded_len, return_hypotheses=True
    )[0]
    return token_ids(hypothesis), hypothesis.text


def token_ids(hypothesis) -> list[int]:
    sequence = hypothesis.y_sequence
    return sequence.tolist() if torch.is_tensor(sequence) else list(sequence)


def _pair(value) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)] * 2
