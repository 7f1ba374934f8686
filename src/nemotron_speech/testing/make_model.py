"""Build the project's small cache-aware FastConformer-RNNT test model via NeMo's real code path.

    python -m nemotron_speech.testing.make_model --out tests/assets/asr

Steps: render the training sentences with espeak-ng, train a SentencePiece BPE tokenizer on them,
instantiate `EncDecRNNTBPEModel` from a config written here (NeMo ships no example YAMLs), train it
briefly on CPU until it transcribes every sentence exactly at every right context, then save the
`.nemo` and a `build.json` recording the weights checksum and the exact-match counts.

Deterministic: Python's `random` (NeMo samples the training look-ahead with it), numpy and torch are
seeded, and training runs on one thread. Bit-identical weights are promised only for the same CPU,
torch and NeMo versions, which `build.json` records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path

from nemotron_speech.testing import speech
from nemotron_speech.testing.sentences import SENTENCES

MODEL_FILE = "tiny-asr.nemo"
BUILD_FILE = "build.json"
ATT_CONTEXT_SIZES = [[70, 13], [70, 6], [70, 1], [70, 0]]
# (steps, peak learning rate, max random leading silence in seconds); the last round makes the
# model tolerate speech that does not start at t=0
TRAINING_ROUNDS = ((400, 3e-3, 0.0), (500, 1.5e-3, 0.0), (800, 1e-3, 1.0))
SEED = 0


def model_config(
    tokenizer_dir: str,
    d_model: int = 96,
    layers: int = 3,
    heads: int = 4,
    features: int = 80,
    subsampling_channels: int = 64,
    pred_hidden: int = 64,
    joint_hidden: int = 64,
    streaming: bool = True,
) -> dict:
    """Config of a cache-aware streaming FastConformer-RNNT; the defaults make the tiny test model.

    Follows NeMo's `fastconformer_transducer_bpe_streaming.yaml`. The full-size benchmark
    architecture is d_model 1024, 24 layers, 8 heads, 128 features, 256 channels, 640 hidden.
    `streaming=False` gives an ordinary offline FastConformer (unlimited attention, symmetric
    convolutions), which the engine must reject.
    """
    dataset = {
        "manifest_filepath": None,
        "sample_rate": 16000,
        "batch_size": 4,
        "defer_setup": True,
    }
    return {
        "sample_rate": 16000,
        "compute_eval_loss": False,
        "log_prediction": False,
        "model_defaults": {
            "enc_hidden": d_model,
            "pred_hidden": pred_hidden,
            "joint_hidden": joint_hidden,
        },
        "tokenizer": {"dir": tokenizer_dir, "type": "bpe"},
        # transcribe() reads validation_ds.use_start_end_token; defer_setup builds no loader now
        "train_ds": {**dataset, "shuffle": True},
        "validation_ds": {**dataset, "shuffle": False, "use_start_end_token": False},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "NA",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": features,
            "n_fft": 512,
            "frame_splicing": 1,
            "dither": 1e-5,
            "pad_to": 0,
        },
        "spec_augment": None,
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": features,
            "feat_out": -1,
            "n_layers": layers,
            "d_model": d_model,
            "use_bias": True,
            "subsampling": "dw_striding",
            "subsampling_factor": 8,
            "subsampling_conv_channels": subsampling_channels,
            "causal_downsampling": streaming,
            "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos",
            "n_heads": heads,
            "att_context_size": ATT_CONTEXT_SIZES if streaming else [-1, -1],
            "att_context_style": "chunked_limited" if streaming else "regular",
            "att_context_probs": None,
            "xscaling": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": 9,
            "conv_norm_type": "layer_norm",
            "conv_context_size": "causal" if streaming else None,
            "dropout": 0.1,
            "dropout_pre_encoder": 0.1,
            "dropout_emb": 0.0,
            "dropout_att": 0.1,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None,
            "random_state_sampling": False,
            "blank_as_pad": True,
            "prednet": {
                "pred_hidden": pred_hidden,
                "pred_rnn_layers": 1,
                "t_max": None,
                "dropout": 0.2,
            },
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None,
            "preserve_memory": False,
            "fuse_loss_wer": False,
            "fused_batch_size": 4,
            "jointnet": {"joint_hidden": joint_hidden, "activation": "relu", "dropout": 0.2},
        },
        "decoding": {
            "strategy": "greedy_batch",
            "greedy": {"max_symbols": 10, "loop_labels": True, "use_cuda_graph_decoder": False},
        },
        "loss": {"loss_name": "default"},
        "optim": None,
    }


FULL_SIZE = {
    "d_model": 1024,
    "layers": 24,
    "heads": 8,
    "features": 128,
    "subsampling_channels": 256,
    "pred_hidden": 640,
    "joint_hidden": 640,
}


def tokenizer_corpus(vocab_size: int) -> list[str]:
    """The sentences, plus seeded pseudo-words when a vocabulary this large needs more text."""
    lines = list(SENTENCES) * 20
    if vocab_size <= 128:
        return lines
    rng = random.Random(SEED)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(4000)]
    return lines + [
        " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) for _ in range(20000)
    ]


def build_full_size(work_dir: Path):
    """The production-size architecture (~0.6 B parameters) with random weights, for timing: its
    compute equals a trained model's. Check it against a real `model_config.yaml` when you can."""
    return build_untrained(tokenizer_corpus(1024), work_dir, vocab_size=1024, **FULL_SIZE)


def build_untrained(corpus_lines: list[str], work_dir: Path, vocab_size: int = 96, **arch):
    """Train the tokenizer on `corpus_lines` and instantiate a model with random weights."""
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model
    from omegaconf import OmegaConf

    corpus = work_dir / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines) + "\n")
    create_spt_model(
        str(corpus),
        vocab_size=vocab_size,
        sample_size=-1,
        do_lower_case=True,
        tokenizer_type="bpe",
        output_dir=str(work_dir),
    )
    return EncDecRNNTBPEModel(cfg=OmegaConf.create(model_config(str(work_dir), **arch)))


def rnnt_loss(logits, targets, logit_lengths, target_lengths, blank: int):
    """RNN-T negative log-likelihood, vectorised over labels with logcumsumexp.

    NeMo's CPU loss (warprnnt_numba) takes seconds per batch and leaves numba threads that slow
    torch down afterwards; this one takes ~0.1 s for the tiny model.
    """
    import torch

    log_probs = logits.log_softmax(-1)
    batch, frames, labels_plus_one, _ = log_probs.shape
    blank_lp = log_probs[..., blank]
    tokens = targets[:, : labels_plus_one - 1].clamp(min=0)
    index = tokens[:, None, :, None].expand(batch, frames, labels_plus_one - 1, 1)
    label_lp = log_probs[:, :, :-1, :].gather(-1, index).squeeze(-1)
    emitted = torch.cat([torch.zeros(batch, frames, 1), torch.cumsum(label_lp, dim=-1)], dim=-1)
    alphas = [emitted[:, 0]]
    for t in range(1, frames):
        carried = alphas[-1] + blank_lp[:, t - 1]
        alphas.append(emitted[:, t] + torch.logcumsumexp(carried - emitted[:, t], dim=-1))
    alpha = torch.stack(alphas, dim=1)
    rows = torch.arange(batch)
    last = logit_lengths - 1
    return -(alpha[rows, last, target_lengths] + blank_lp[rows, last, target_lengths])


def train_round(model, audio, texts, steps: int, lr: float, max_shift_s: float, batch: int = 8):
    """One seeded AdamW + OneCycle run over random batches of the utterances."""
    import numpy as np
    import torch

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    targets = [torch.tensor(model.tokenizer.text_to_ids(text)) for text in texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.1
    )
    blank = model.joint.num_classes_with_blank - 1
    model.train()
    for _ in range(steps):
        picked = torch.randperm(len(audio), generator=generator)[:batch].tolist()
        clips = [audio[i] for i in picked]
        if max_shift_s > 0:
            clips = [
                torch.cat(
                    [
                        torch.zeros(
                            int(
                                torch.randint(
                                    0, int(max_shift_s * 16000) + 1, (1,), generator=generator
                                )
                            )
                        ),
                        clip,
                    ]
                )
                for clip in clips
            ]
        signal = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
        signal_len = torch.tensor([len(clip) for clip in clips])
        labels = torch.nn.utils.rnn.pad_sequence([targets[i] for i in picked], batch_first=True)
        label_len = torch.tensor([len(targets[i]) for i in picked])
        encoded, encoded_len = model.forward(input_signal=signal, input_signal_length=signal_len)
        decoded, _, _ = model.decoder(targets=labels, target_length=label_len)
        logits = model.joint(encoder_outputs=encoded, decoder_outputs=decoded)
        loss = (rnnt_loss(logits, labels, encoded_len, label_len, blank) / label_len).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return float(loss)


def exact_matches(model, audio, texts) -> dict[str, int]:
    """Offline greedy transcripts equal to the sentence, per right context."""
    import torch

    counts = {}
    for context in model.encoder.att_context_size_all:
        model.encoder.set_default_att_context_size(context)
        hits = 0
        for signal, text in zip(audio, texts, strict=True):
            with torch.inference_mode():
                encoded, encoded_len = model.forward(
                    input_signal=signal[None], input_signal_length=torch.tensor([len(signal)])
                )
                hyp = model.decoding.rnnt_decoder_predictions_tensor(
                    encoded, encoded_len, return_hypotheses=True
                )[0]
            hits += int(hyp.text.strip() == text)
        counts[str(context[1])] = hits
    model.encoder.set_default_att_context_size(model.encoder.att_context_size_all[0])
    return counts


def weights_sha256(model) -> str:
    """Checksum of the state_dict tensors (the .nemo tar's metadata differs between builds)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_environment() -> dict[str, str]:
    """What bit-identical reproduction depends on."""
    import nemo
    import torch

    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0] if names else cpu
    return {
        "torch": torch.__version__,
        "nemo": nemo.__version__,
        "cpu": cpu,
        "machine": platform.machine(),
        "espeak-ng": subprocess.run(
            ["espeak-ng", "--version"], capture_output=True, text=True
        ).stdout.strip(),
    }


def build(out_dir: Path, log=print) -> dict:
    """Render speech, build and train the model, save `MODEL_FILE` and `BUILD_FILE` in `out_dir`."""
    import soundfile
    import torch
    from nemo.utils import logging as nemo_logging

    torch.set_num_threads(1)
    nemo_logging.setLevel("ERROR")
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    wavs = speech.render_all(out_dir / "speech")
    audio = [torch.from_numpy(soundfile.read(wav, dtype="float32")[0]) for wav in wavs]
    texts = list(SENTENCES)
    random.seed(SEED)
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        model = build_untrained(texts * 20, Path(tokenizer_dir))
        for steps, lr, shift in TRAINING_ROUNDS:
            loss = train_round(model, audio, texts, steps, lr, shift)
            log(
                f"trained {steps} steps at lr {lr}: loss {loss:.4f}, "
                f"{time.perf_counter() - started:.0f} s"
            )
        counts = exact_matches(model, audio, texts)
        model.save_to(str(out_dir / MODEL_FILE))
    record = {
        "model": MODEL_FILE,
        "weights_sha256": weights_sha256(model),
        "exact_matches_per_right_context": counts,
        "utterances": len(texts),
        "speech_sha256": {wav.name: _file_sha256(wav) for wav in wavs},
        "environment": build_environment(),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log(json.dumps(record["exact_matches_per_right_context"]))
    return record


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    build(args.out)


if __name__ == "__main__":
    main()
