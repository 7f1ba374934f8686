"""Build the project's small cache-aware FastConformer-RNNT test model via NeMo's real code path.

    python -m nemotron_speech.testing.make_model --out tests/assets/asr

Steps: render the training sentences with espeak-ng, train a SentencePiece BPE tokenizer on them,
instantiate `EncDecRNNTBPEModel` from a config written here (NeMo ships no example YAMLs), train it
briefly on CPU until it transcribes every sentence exactly at every right context, then save the
`.nemo` and a `build.json` recording the weights checksum and the exact-match counts.

Deterministic: Python's `random` (NeMo samples the training look-ahead with it), numpy and torch are
seeded, and training runs on one thread. Bit-identical weights are promised only for the same CPU,
torch and NeMo versions, which `build.json` records.

    python -m nemotron_speech.testing.make_model --check tests/assets/asr

rebuilds in a temporary folder and compares with the folder's `build.json` (exit 1 on a
difference); it takes ~11 minutes on one thread. The test suite checks the cheap part on every
run: the rendered speech and the weights' checksum `FINGERPRINT_STEPS` steps into training, which
`build.json` also records (`fingerprint`).
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
from nemotron_speech.testing.training import SEED, exact_matches, train

MODEL_FILE = "tiny-asr.nemo"
BUILD_FILE = "build.json"
ATT_CONTEXT_SIZES = [[70, 13], [70, 6], [70, 1], [70, 0]]
# steps of each training round in the miniature build whose weights' checksum build.json records
# (`fingerprint`): every round's settings and every part of a step (look-ahead sampling, loss,
# clipping, AdamW, schedule) move the weights, in ~15 s instead of the full build's ~10 min
FINGERPRINT_STEPS = 10


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
    compute equals a trained model's. Check it against a real `model_config.yaml` when you can.
    Seeded: benchmark runs on separate machine starts time the same weights (unseeded, each
    start calibrated other weights to another bias and emission, H200, 2026-11-30)."""
    return build_untrained(
        tokenizer_corpus(1024), work_dir, vocab_size=1024, seed=SEED, **FULL_SIZE
    )


def build_untrained(
    corpus_lines: list[str], work_dir: Path, vocab_size: int = 96, seed: int | None = None, **arch
):
    """Train the tokenizer on `corpus_lines` and instantiate a model with random weights: drawn
    from `seed` without touching torch's global generator, or (None) from that generator."""
    import torch
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
    config = OmegaConf.create(model_config(str(work_dir), **arch))
    if seed is None:
        return EncDecRNNTBPEModel(cfg=config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EncDecRNNTBPEModel(cfg=config)


def weights_sha256(model) -> str:
    """Checksum of the state_dict tensors (the .nemo tar's metadata differs between builds)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_environment() -> dict[str, str]:
    """What bit-identical reproduction depends on. The CPU's model name can be generic (virtual
    machines report "Intel(R) Xeon(R) Processor" on hosts of different generations), so the
    instruction set torch picks its kernels for is recorded too."""
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
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "espeak-ng": subprocess.run(
            ["espeak-ng", "--version"], capture_output=True, text=True
        ).stdout.strip(),
    }


def seeded_untrained(texts: list[str], tokenizer_dir: Path):
    """The tiny model before training, as every build starts it: one thread, seeded."""
    import torch
    from nemo.utils import logging as nemo_logging

    torch.set_num_threads(1)
    nemo_logging.setLevel("ERROR")
    random.seed(SEED)
    torch.manual_seed(SEED)
    return build_untrained(texts * 20, tokenizer_dir)


def read_speech(wavs: list[Path]) -> list:
    """The rendered sentences as float tensors, what training and the exact-match count take."""
    import soundfile
    import torch

    return [torch.from_numpy(soundfile.read(wav, dtype="float32")[0]) for wav in wavs]


def fingerprint(audio: list) -> str:
    """The weights' checksum after every training round is cut to `FINGERPRINT_STEPS` steps: what
    `build.json` records as `fingerprint`, a check of the build code, its seeding and its training
    loop that does not train the whole model."""
    texts = list(SENTENCES)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        model = seeded_untrained(texts, Path(tokenizer_dir))
        train(model, audio, texts, stop_after=FINGERPRINT_STEPS)
        return weights_sha256(model)


def build(out_dir: Path, log=print) -> dict:
    """Render speech, build and train the model, save `MODEL_FILE` and `BUILD_FILE` in `out_dir`."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    wavs = speech.render_all(out_dir / "speech")
    audio = read_speech(wavs)
    texts = list(SENTENCES)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        model = seeded_untrained(texts, Path(tokenizer_dir))
        train(model, audio, texts, log=log)
        counts = exact_matches(model, audio, texts)
        model.save_to(str(out_dir / MODEL_FILE))
    record = {
        "model": MODEL_FILE,
        "weights_sha256": weights_sha256(model),
        "fingerprint": {"steps_per_round": FINGERPRINT_STEPS, "weights_sha256": fingerprint(audio)},
        "exact_matches_per_right_context": counts,
        "utterances": len(texts),
        "speech_sha256": {wav.name: file_sha256(wav) for wav in wavs},
        "environment": build_environment(),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log(json.dumps(record["exact_matches_per_right_context"]))
    return record


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def differences(rebuilt: dict, record: dict) -> list[str]:
    """How a rebuild falls short of `record`: every sentence exact at every right context wherever
    it is built; the checksums only in the recorded environment, the only one they are promised
    for."""
    keys = ["exact_matches_per_right_context"]
    if rebuilt["environment"] == record["environment"]:
        keys += ["speech_sha256", "fingerprint", "weights_sha256"]
    return [
        f"{key}: rebuilt {rebuilt[key]}, recorded {record[key]}"
        for key in keys
        if rebuilt[key] != record[key]
    ]


def check(folder: Path, log=print) -> list[str]:
    """Rebuild in a temporary folder and compare with `folder`'s `BUILD_FILE`."""
    record = json.loads((folder / BUILD_FILE).read_text())
    with tempfile.TemporaryDirectory() as work:
        rebuilt = build(Path(work), log=log)
    if rebuilt["environment"] != record["environment"]:
        log(
            f"checksums not compared: built in {rebuilt['environment']}, "
            f"bit-identity is promised only in {record['environment']}"
        )
    return differences(rebuilt, record)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="output folder")
    target.add_argument(
        "--check",
        type=Path,
        metavar="FOLDER",
        help=f"rebuild in a temporary folder and compare with FOLDER/{BUILD_FILE} "
        "(exit 1 on a difference; ~11 min)",
    )
    args = parser.parse_args(argv)
    if args.out:
        build(args.out)
        return
    if not (args.check / BUILD_FILE).is_file():
        parser.error(
            f"{args.check / BUILD_FILE} not found: --check takes a folder that --out wrote, "
            "such as tests/assets/asr"
        )
    problems = check(args.check)
    for problem in problems:
        print(f"differs: {problem}")
    print("the rebuild differs from the record" if problems else "the rebuild matches the record")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
