"""The full-size architecture with random weights, made to emit like a trained model.

Random weights cost the same encoder compute as the real checkpoint (which cannot be downloaded
where the benchmarks were written), but unbiased they emit up to `max_symbols` tokens per frame,
which makes greedy RNNT decoding far costlier than with a trained model. The benchmarks raise the
joint's blank logit until the model emits about as much as speech does (~0.3 tokens per 80 ms
frame), measured on the streaming path itself: random weights emit very differently offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nemotron_speech.asr import AsrEngine
from nemotron_speech.asr.model import configure_decoding, select_right_context
from nemotron_speech.protocol import SAMPLE_RATE

SPEECH_TOKENS_PER_FRAME = 0.3


def noise(seconds: float = 120.0) -> np.ndarray:
    """Quiet noise: the input for random weights (same compute as speech)."""
    samples = np.random.default_rng(0).standard_normal(int(SAMPLE_RATE * seconds)) * 0.05
    return samples.astype(np.float32)


def calibrate_blank_bias(
    model, right_context: int, audio: np.ndarray, tokens_per_frame: float
) -> float:
    """Bisect the blank-logit bias so that streaming `audio` emits ~`tokens_per_frame`; the bias
    stays added to the model's joint and is returned."""
    engine = AsrEngine(model, right_context=right_context, cuda_graphs=False, fast_layers=True)
    output = model.joint.joint_net[-1]
    frames = len(audio) // 1280
    low, high = 0.0, 64.0
    for _ in range(10):
        bias = (low + high) / 2
        with torch.no_grad():
            output.bias[-1] += bias
        rate = len(engine.transcribe(audio).token_ids) / frames
        with torch.no_grad():
            output.bias[-1] -= bias
        low, high = (bias, high) if rate > tokens_per_frame else (low, bias)
    with torch.no_grad():
        output.bias[-1] += (low + high) / 2
    return round((low + high) / 2, 3)


def calibrated_full_size(
    work: Path,
    device: str,
    right_context: int,
    tokens_per_frame: float = SPEECH_TOKENS_PER_FRAME,
    cuda_graph_decoder: bool = False,
):
    """(model on `device`, description): the full-size architecture, calibrated at
    `right_context` (emission depends on the context)."""
    from nemotron_speech.testing.make_model import build_full_size

    model = build_full_size(work).eval()
    configure_decoding(model, cuda_graph_decoder)
    model = model.to(torch.device(device))
    select_right_context(model, right_context)
    bias = calibrate_blank_bias(model, right_context, noise(8), tokens_per_frame)
    description = (
        f"full-size architecture, random weights, blank bias {bias} for ~{tokens_per_frame} "
        f"tokens per 80 ms frame at R={right_context}"
    )
    return model, description
