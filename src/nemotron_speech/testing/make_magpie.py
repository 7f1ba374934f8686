"""Build the project's tiny Magpie TTS test model (codec + Magpie) through NeMo's real classes.

    python -m nemotron_speech.testing.make_magpie --out tests/assets/tts

Writes `tiny-codec.nemo` (an `AudioCodecModel`), `tiny-magpie.nemo` (a `MagpieTTSModel`, which
stores only the codec's path, not its weights) and `build.json` (weights checksums, sizes, the
build environment). Both configs are written here: NeMo's wheel ships no example YAMLs.

Plumbing only: the weights are random (seeded), so the audio is noise. What the tests check does
not need training:
- the codec has NanoCodec's frame structure (22.05 kHz, 1024 samples a frame) and, like
  NanoCodec, a causal HiFi-GAN decoder, so audio decoded frame by frame equals the whole decode;
- NeMo's attention prior is on with finished-sentence tracking, so the decoder walks through the
  text and stops a fixed number of steps after its end: a longer text gives longer audio;
- two speakers are "baked" (what `MagpieTTSModel.do_tts` and our engine need), from random
  context codes run through the model's own context encoder.

Deterministic: torch is seeded before each model is built; bit-identical weights are promised
only for the torch and NeMo versions `build.json` records.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nemotron_speech.testing.make_model import build_environment, weights_sha256

CODEC_FILE = "tiny-codec.nemo"
MAGPIE_FILE = "tiny-magpie.nemo"
BUILD_FILE = "build.json"
SEED = 0
SPEAKERS = 2
CONTEXT_FRAMES = 20  # codec frames of (random) reference audio behind each baked speaker

_ACM = "nemo.collections.tts.modules.audio_codec_modules."
_LOSS = "nemo.collections.tts.losses.audio_codec_loss."
_TOK = "nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers."

# NanoCodec (nemo-nano-codec-22khz-1.89kbps-21.5fps) as public descriptions of the checkpoint give
# it: 8 FSQ codebooks of [8, 7, 6, 6] levels, a causal HiFi-GAN decoder with 864 base channels.
# Not read from the checkpoint itself (nothing is downloaded here).
FULL_CODEC = {
    "groups": 8,
    "levels": [8, 7, 6, 6],
    "decoder_channels": 864,
    "kernels": [3, 7, 11],
    "dilations": [1, 3, 5],
}
TINY_CODEC = {
    "groups": 4,
    "levels": [4, 4, 4, 4],
    "decoder_channels": 64,
    "kernels": [3, 7],
    "dilations": [1, 3],
}
# magpie_tts_multilingual_357m as public descriptions of the checkpoint give it: d_model 768,
# 6 encoder and 12 decoder layers (12 heads, FFN 3072), one 128-wide cross-attention head,
# 2 context-encoder layers, a 1-layer 256-wide local transformer, 110 frames of speaker context.
FULL_MAGPIE = {
    "d_model": 768,
    "d_ffn": 3072,
    "heads": 12,
    "encoder_layers": 6,
    "decoder_layers": 12,
    "context_layers": 2,
    "xa_d_head": 128,
    "lt_dim": 256,
    "max_text": 1024,
    "max_steps": 500,
    "context_frames": 108,  # + context BOS/EOS = 110
}
TINY_MAGPIE = {
    "d_model": 32,
    "d_ffn": 128,
    "heads": 2,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "context_layers": 1,
    "xa_d_head": None,
    "lt_dim": 32,
    "max_text": 256,
    "max_steps": 160,
    "context_frames": CONTEXT_FRAMES,
}


def codec_config(groups: int, levels: list[int], decoder_channels: int, kernels, dilations) -> dict:
    """`AudioCodecModel` config with NanoCodec's framing: 22.05 kHz, 1024 samples a frame.

    Only the decoder matters for TTS; the encoder is the smallest that `__init__` accepts.
    """
    up = [8, 8, 4, 2, 2]
    encoded_dim = groups * len(levels)  # GroupFSQ: the encoder output splits into the groups
    return {
        "sample_rate": 22050,
        "samples_per_frame": 1024,  # the product of the up-sample rates
        "audio_encoder": {
            "_target_": _ACM + "CausalHiFiGANEncoder",
            "encoded_dim": encoded_dim,
            "down_sample_rates": up[::-1],
            "base_channels": 1,
            "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [1],
        },
        "vector_quantizer": {
            "_target_": _ACM + "GroupFiniteScalarQuantizer",
            "num_groups": groups,
            "num_levels_per_group": levels,
        },
        "audio_decoder": {
            "_target_": _ACM + "CausalHiFiGANDecoder",
            "input_dim": encoded_dim,
            "up_sample_rates": up,
            "base_channels": decoder_channels,
            "resblock_kernel_sizes": kernels,
            "resblock_dilation_sizes": dilations,
            "activation": "half_snake",
        },
        # FSQ has no commit loss; the default scale 1.0 makes __init__ raise
        "commit_loss_scale": 0.0,
        # __init__ builds the training losses even for inference
        "loss_resolutions": [[512, 128, 512]],
        "mel_loss_dims": [32],
        "generator_loss": {"_target_": _LOSS + "GeneratorSquaredLoss"},
        "discriminator_loss": {"_target_": _LOSS + "DiscriminatorSquaredLoss"},
    }


def _transformer(layers: int, arch: dict, *, causal: bool, kernel: int, length: int, xattn=False):
    """Keyword arguments of NeMo's `transformer_2501.Transformer`.

    `max_length_causal_mask` sizes a (1, 1, L, L) mask buffer saved with every causal layer, and
    the learnable position table of the text encoder (the longest text one pass takes).
    """
    config = {
        "n_layers": layers,
        "d_model": arch["d_model"],
        "d_ffn": arch["d_ffn"],
        "sa_n_heads": arch["heads"],
        "kernel_size": kernel,
        "p_dropout": 0.0,
        "p_dropout_out": 0.0,
        "has_xattn": xattn,
        "is_causal": causal,
        "apply_norm_out": True,
        "max_length_causal_mask": length,
        "use_learnable_pos_emb": causal and not xattn,
    }
    if xattn:
        config |= {"xa_d_memory": arch["d_model"], "xa_n_heads": 1, "apply_norm_to_cond": True}
        if arch["xa_d_head"]:
            config["xa_d_head"] = arch["xa_d_head"]
    return config


def magpie_config(codec_path: str, arch: dict) -> dict:
    """`MagpieTTSModel` config (`decoder_ce`, the type with baked speakers) on `codec_path`."""
    decoder_length = arch["context_frames"] + 2 + arch["max_steps"] + 1
    return {
        "model_type": "decoder_ce",
        "codecmodel_path": codec_path,  # a local path; "nvidia/..." would download
        "embedding_dim": arch["d_model"],
        # "english" is what NeMo's language map picks for "en" when there is no phoneme tokenizer
        "text_tokenizers": {
            "english": {
                "_target_": _TOK + "EnglishCharsTokenizer",
                "punct": True,
                "apostrophe": True,
                "pad_with_space": False,
            }
        },
        "encoder": _transformer(
            arch["encoder_layers"], arch, causal=True, kernel=3, length=arch["max_text"]
        ),
        "context_encoder": _transformer(
            arch["context_layers"], arch, causal=False, kernel=3, length=1
        ),
        "decoder": _transformer(
            arch["decoder_layers"], arch, causal=True, kernel=1, length=decoder_length, xattn=True
        ),
        "local_transformer_type": "autoregressive",
        "local_transformer_n_layers": 1,
        "local_transformer_n_heads": 1,
        "local_transformer_hidden_dim": arch["lt_dim"],
        # read by __init__ although they only matter for training
        "prior_end_step": 0,
        "prior_scaledown_start_step": 0,
        "use_kv_cache_for_inference": True,
        "inference_parameters": {
            "max_decoder_steps": arch["max_steps"],
            "temperature": 0.7,
            "topk": 80,
            "cfg_scale": 2.5,
            # the prior walks the cross-attention through the text; with finished-sentence
            # tracking, EOS is forbidden before the text's end and forced 20 steps after it
            "apply_attention_prior": True,
            "ignore_finished_sentence_tracking": False,
        },
    }


def bake_speakers(model, speakers: int, context_frames: int, seed: int) -> None:
    """Store context-encoder outputs of random context codes as baked speaker embeddings.

    NeMo has no function for this; `MagpieTTSModel.load_state_dict` turns these four entries into
    `baked_context_embedding`, and `save_to` then leaves the context encoder out.
    """
    import torch
    from nemo.collections.tts.parts.utils.helpers import get_mask_from_lengths

    generator = torch.Generator().manual_seed(seed)
    shape = (speakers, model.num_audio_codebooks, context_frames)
    codes = torch.randint(0, model.codebook_size, shape, generator=generator)
    lengths = torch.full((speakers,), context_frames, dtype=torch.long)
    with torch.no_grad():
        batch = {"context_audio_codes": codes, "context_audio_codes_lens": lengths}
        codes, lengths = model._get_context_audio_codes(batch)
        embedded, lengths = model._get_context_embeddings({}, codes, lengths)
        mask = get_mask_from_lengths(lengths)
        embedded = model.context_encoder(embedded, mask, cond=None, cond_mask=None)["output"]
    count, frames, dim = embedded.shape
    state = model.state_dict()
    state["baked_context_embedding.weight"] = embedded.reshape(count, frames * dim).clone()
    state["_baked_embedding_T"] = torch.tensor(frames)
    state["_baked_embedding_D"] = torch.tensor(dim)
    state["baked_context_embedding_len"] = lengths.clone()
    model.load_state_dict(state)


def build_models(work_dir: Path, codec_arch: dict, magpie_arch: dict, speakers: int = SPEAKERS):
    """Build, seed and save the codec, then build Magpie on it and bake its speakers.

    Returns (codec path, Magpie model). Used for the test model and, with `FULL_CODEC` and
    `FULL_MAGPIE`, for the benchmarks' full-size random-weight model.
    """
    import torch
    from nemo.collections.tts.models import AudioCodecModel
    from nemo.collections.tts.models.magpietts import MagpieTTSModel
    from nemo.utils import logging as nemo_logging
    from omegaconf import OmegaConf

    nemo_logging.setLevel("ERROR")
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    codec = AudioCodecModel(cfg=OmegaConf.create(codec_config(**codec_arch)))
    codec_path = work_dir / CODEC_FILE
    codec.save_to(str(codec_path))
    del codec
    torch.manual_seed(SEED)
    model = MagpieTTSModel(cfg=OmegaConf.create(magpie_config(str(codec_path), magpie_arch)))
    model.eval()
    bake_speakers(model, speakers, magpie_arch["context_frames"], SEED + 1)
    return codec_path, model


def build(out_dir: Path, log=print) -> dict:
    """Build the tiny test model into `out_dir` and record it in `BUILD_FILE`."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    codec_path, model = build_models(out_dir, TINY_CODEC, TINY_MAGPIE)
    model.save_to(str(out_dir / MAGPIE_FILE))
    record = {
        "codec": CODEC_FILE,
        "magpie": MAGPIE_FILE,
        "codec_weights_sha256": weights_sha256(model._codec_model),
        "magpie_weights_sha256": weights_sha256(model),  # state_dict() leaves the codec out
        "speakers": model.num_baked_speakers,
        "sample_rate": model.output_sample_rate,
        "bytes": {name: (out_dir / name).stat().st_size for name in (CODEC_FILE, MAGPIE_FILE)},
        "environment": environment(),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log(json.dumps(record, indent=2))
    return record


def environment() -> dict[str, str]:
    """What bit-identical weights depend on (the ASR model's list, less espeak-ng)."""
    return {k: v for k, v in build_environment().items() if k != "espeak-ng"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    build(args.out)


if __name__ == "__main__":
    main()
