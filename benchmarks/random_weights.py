"""The full-size architecture with random weights, made to emit like a trained model, and the
rule that says whether a run on it measured anything.

Random weights cost the same encoder compute as the real checkpoint (which cannot be downloaded
where the benchmarks were written), but unbiased they emit up to `max_symbols` tokens per frame,
which makes greedy RNNT decoding far costlier than with a trained model. The benchmarks raise the
joint's blank logit until the model emits about as much as speech does (~0.3 tokens per 80 ms
frame), measured on the streaming path of the very engine configuration that is measured next:
precision, CUDA graphs and fast layers each move the logits enough to change emission several
fold (a bias bisected in fp32 left one bf16 run at ~180 tokens per 3 s, another at none), and
random weights emit very differently offline.

Calibration runs on speech, the audio the measured streams carry: on noise random weights give
nearly the same logits on every frame, so emission jumped from ~0 to several tokens per frame
across a tiny bias step and the bisection ended far from its target (H200, 2026-11-30).
Where the emission still jumps across the target at one bias (random decoders are bistable
near it), calibration draws the joint's output layer afresh and searches again
(`calibrate_blank_bias`). Calibration aims; each run then counts what was emitted. A
random-weight run whose emission is outside `VALID_TOKENS_PER_FRAME` timed a decoder doing other
work than a trained model's and is marked invalid.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nemotron_speech.asr.model import configure_decoding
from nemotron_speech.protocol import SAMPLE_RATE

SPEECH_TOKENS_PER_FRAME = 0.3
VALID_TOKENS_PER_FRAME = (0.2, 0.5)
JOINT_DRAWS = 3  # joint output layers a calibration tries (the model's own, then fresh draws)
FRAME_SAMPLES = SAMPLE_RATE * 80 // 1000  # one encoder frame: 80 ms


def emission(tokens: int, samples: int, random_weights: bool) -> dict:
    """Tokens per 80 ms frame of `samples` of audio, and whether the run is valid: random
    weights must emit like speech (`VALID_TOKENS_PER_FRAME`); a trained model emits what it
    emits, so its runs are always valid."""
    rate = tokens / (samples / FRAME_SAMPLES) if samples else float("nan")
    low, high = VALID_TOKENS_PER_FRAME
    return {"tokens_per_frame": round(rate, 3), "valid": not random_weights or low <= rate <= high}


def invalid_note(emission_row: dict) -> str:
    """The loud line printed under an invalid row."""
    low, high = VALID_TOKENS_PER_FRAME
    return (
        f"INVALID: {emission_row['tokens_per_frame']} tokens per 80 ms frame is outside "
        f"{low}-{high}; the decoder did other work than a trained model's"
    )


def calibration_segments(audio: np.ndarray, count: int = 8, seconds: float = 3.0) -> list:
    """`count` pieces of `audio`, `seconds` long, spread over it: streams as long as the ones
    measured (random weights emit most in a stream's first seconds, so a long calibration
    stream would leave short measured streams emitting several times its rate)."""
    length = int(seconds * SAMPLE_RATE)
    step = (len(audio) - length) // max(1, count - 1)
    return [audio[n * step : n * step + length] for n in range(count)]


def search_bias(
    rate_at: Callable[[float], float], target: float, tolerance: float, rounds: int
) -> tuple[float, float, bool, list[tuple[float, float]]]:
    """Bisect a bias in -64..64 (random weights emit too much at 0; a target may need less bias)
    until `rate_at(bias)` is within `tolerance` of `target`. Emission falls with the bias overall,
    but neither smoothly (nearly equal logits on every frame flip together) nor monotonically
    (random weights sit near logit ties), so the last midpoint can be far off: the bias whose
    rate came closest is kept. Returns it, its rate, whether that met `tolerance`, and every
    (bias, rate) tried, in order."""
    low, high = -64.0, 64.0
    tried: list[tuple[float, float]] = []
    for _ in range(rounds):
        bias = (low + high) / 2
        rate = rate_at(bias)
        tried.append((bias, rate))
        if abs(rate - target) <= tolerance:
            break
        low, high = (bias, high) if rate > target else (low, bias)
    # of equally close ones the latest, nearest where emission jumps past the target
    bias, rate = min(reversed(tried), key=lambda probe: abs(probe[1] - target))
    return bias, rate, abs(rate - target) <= tolerance, tried


def calibrate_blank_bias(
    engine,
    segments: list[np.ndarray],
    tokens_per_frame: float = SPEECH_TOKENS_PER_FRAME,
    tolerance: float = 0.03,
    rounds: int = 20,
    draws: int = JOINT_DRAWS,
) -> dict:
    """The blank-logit bias that makes `engine` streaming each of `segments` (speech) from a
    fresh stream emit `tokens_per_frame` (all together), found by `search_bias` on that engine
    itself (its precision, graphs, kernels and right context). Where the emission jumps across
    the target at one bias (an H200 bf16 run went from 0.61 to 0.11 tokens per frame over a
    bias step of 0.0001), the search is repeated with the joint's output layer drawn afresh
    (`draw_joint_output`), up to `draws` layers in all. The chosen layer and bias stay set in
    the model's joint (fp32 in every precision). Returns the bias and the layer's `joint_draw`
    (0: the model's own), the emission it gives (`emission`'s fields), whether it is within
    `tolerance` (`converged`; if not, the closest of every search), each segment's emission
    with it (whether streams share it, as speech does, or a few emit everything) and the
    emission at every bias tried, per draw (`tried`, to see where it jumps)."""
    layer = engine.model.joint.joint_net[-1]
    own = {name: value.detach().clone() for name, value in layer.state_dict().items()}
    samples = sum(map(len, segments))
    searches = []  # (draw, bias, rate, converged, tried, each segment's tokens at each bias)
    for draw in range(draws):
        draw_joint_output(engine.model, draw, own)
        base = float(layer.bias[-1].detach())
        tokens: dict[float, list[int]] = {}

        def rate_at(bias: float, base=base, tokens=tokens) -> float:
            with torch.no_grad():
                layer.bias[-1] = base + bias
            tokens[bias] = [len(engine.transcribe(segment).token_ids) for segment in segments]
            return sum(tokens[bias]) / (samples / FRAME_SAMPLES)

        bias, rate, converged, tried = search_bias(rate_at, tokens_per_frame, tolerance, rounds)
        searches.append((draw, bias, rate, converged, tried, tokens))
        if converged:
            break
    draw, bias, _, converged, _, tokens = min(
        searches, key=lambda search: abs(search[2] - tokens_per_frame)
    )
    calibration = {"blank_bias": bias, "joint_draw": draw}
    apply_calibration(engine.model, calibration, own)
    return {
        **calibration,
        **emission(sum(tokens[bias]), samples, random_weights=True),
        "converged": converged,
        "segments_tokens_per_frame": [
            round(n / (len(segment) / FRAME_SAMPLES), 3)
            for n, segment in zip(tokens[bias], segments, strict=True)
        ],
        "tried": [[(round(b, 4), round(r, 3)) for b, r in search[4]] for search in searches],
    }


def draw_joint_output(model, draw: int, own: dict | None = None) -> None:
    """Set the joint's output layer to draw `draw`: 0 is the model's own (`own`, its state as
    built, or the layer as it is when not given), others a fresh `nn.Linear` initialisation
    seeded by `draw` on the CPU, so every process and device draws the same weights."""
    layer = model.joint.joint_net[-1]
    if draw == 0:
        if own is not None:
            layer.load_state_dict(own)
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw)
        fresh = torch.nn.Linear(layer.in_features, layer.out_features)
    layer.load_state_dict(fresh.state_dict())


def apply_calibration(model, calibration: dict, own: dict | None = None) -> None:
    """Put a calibration into a model saved without one (an engine process loads the fp32
    weights and applies its variant's): its joint output layer draw, then its blank bias."""
    draw_joint_output(model, calibration.get("joint_draw", 0), own)
    with torch.no_grad():
        model.joint.joint_net[-1].bias[-1] += calibration["blank_bias"]


def full_size(work: Path, device: str):
    """The full-size architecture, random weights (seeded: the same on every machine start), on
    `device` (calibrate it per engine); and the weights' checksum, for the run's record."""
    from nemotron_speech.testing.make_model import build_full_size, weights_sha256

    model = build_full_size(work).eval()
    configure_decoding(model)
    checksum = weights_sha256(model)  # on the CPU, before 0.6 B parameters move
    return model.to(torch.device(device)), checksum


def restorer(model):
    """A function that puts back the model's fp32 encoder (an engine casts and swaps it in place)
    and, unless told to keep the calibration, its own joint output layer: every variant then
    casts and calibrates the same weights, and a saved model is fp32."""
    encoder = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    layer = model.joint.joint_net[-1]
    own = {name: value.detach().clone() for name, value in layer.state_dict().items()}

    def restore(keep_calibration: bool = False) -> None:
        model.encoder.float().load_state_dict(encoder)
        if not keep_calibration:
            layer.load_state_dict(own)

    return restore
