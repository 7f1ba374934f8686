"""The benchmarks' honesty rules: which runs count (emission like speech), one percentile, and
the calibration that makes random weights emit like speech on the engine being measured."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from benchmarks.common import TINY_MODEL, percentile, process_tree_cpu_seconds, speech_audio
from benchmarks.random_weights import (
    FRAME_SAMPLES,
    apply_calibration,
    calibrate_blank_bias,
    calibration_segments,
    draw_joint_output,
    emission,
    search_bias,
)
from nemotron_speech.asr import AsrEngine
from nemotron_speech.asr.model import load_nemo_model


@pytest.mark.parametrize(
    ("tokens", "valid"), [(19, False), (20, True), (35, True), (50, True), (51, False), (0, False)]
)
def test_random_weight_rows_are_valid_only_between_0_2_and_0_5_tokens_per_frame(tokens, valid):
    row = emission(tokens, 100 * FRAME_SAMPLES, random_weights=True)
    assert row == {"tokens_per_frame": tokens / 100, "valid": valid}


def test_a_trained_model_emits_what_it_emits():
    assert emission(300, 100 * FRAME_SAMPLES, random_weights=False)["valid"] is True


def test_the_one_percentile_is_numpys_linear_definition():
    values = list(np.random.default_rng(1).uniform(0, 100, 37))
    for q in (0, 1, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert np.isnan(percentile([], 50))


def test_server_cpu_includes_its_child_processes():
    """A server's --workers engine processes are its children: their CPU is the server's."""
    busy = "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end: pass"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])",
        ]
    )
    try:
        time.sleep(0.8)  # the child has started and is spinning
        before = sum(process_tree_cpu_seconds(parent.pid)[0].values())
        time.sleep(0.4)
        after = sum(process_tree_cpu_seconds(parent.pid)[0].values())
    finally:
        parent.wait(10)
    assert after - before > 0.15  # the parent itself only waits


def test_the_bias_search_stops_at_the_first_emission_within_tolerance():
    def rate_at(bias: float) -> float:  # emission falling smoothly with the bias
        return max(0.0, 1.0 - bias / 8)

    bias, rate, converged, tried = search_bias(rate_at, 0.3, tolerance=0.03, rounds=20)
    assert converged and abs(rate - 0.3) <= 0.03
    assert tried[-1] == (bias, rate) and len(tried) < 20


def test_the_bias_search_keeps_the_closest_emission_when_the_target_is_unreachable():
    """Emission jumping from 2 to 0 tokens per frame across the target, as random weights on
    noise did (H200, 2026-11-30): the bisection's last midpoint lands just below the jump, at 2;
    the search returns the closest bias it tried instead, and says it did not converge."""

    def rate_at(bias: float) -> float:
        return 2.0 if bias < 1 - 1e-9 else 0.0

    bias, rate, converged, tried = search_bias(rate_at, 0.3, tolerance=0.03, rounds=20)
    assert rate_at(tried[-1][0]) == 2.0  # where plain bisection ended
    assert (bias, rate, converged) == (1.0, 0.0, False)  # the latest of the closest (0 vs 2)
    assert len(tried) == 20


def test_calibration_bisects_on_the_engine_it_is_given():
    """The test model's architecture with fresh random weights (the full-size model is too big
    for CI), calibrated on the speech the engine benchmark streams: calibrating a bf16 engine sets
    the bias that makes that engine emit ~0.3 tokens per frame, kept in the joint (fp32
    calibrates through the same code)."""
    torch.manual_seed(0)
    model = load_nemo_model(TINY_MODEL, device="cpu")
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # random weights, as in the full-size benchmarks
    engine = AsrEngine(model, right_context=1, precision="bf16")
    segments = calibration_segments(speech_audio(), count=2, seconds=2)
    frames = sum(map(len, segments)) / FRAME_SAMPLES

    def rate() -> float:
        return sum(len(engine.transcribe(s).token_ids) for s in segments) / frames

    uncalibrated = rate()
    calibration = calibrate_blank_bias(engine, segments, 0.3)
    assert uncalibrated > 0.5  # random weights emit far more than speech...
    assert calibration["converged"] and abs(calibration["tokens_per_frame"] - 0.3) <= 0.03
    assert calibration["blank_bias"] > 0  # ... until the blank logit is raised
    assert rate() == pytest.approx(calibration["tokens_per_frame"], abs=1e-3)  # bias stays set


def test_a_calibration_that_cannot_reach_its_target_tries_other_joint_draws_and_is_reproducible():
    """An unreachable target (no bias makes the test model emit 9 tokens per frame): every
    joint output draw is searched and the closest kept; a copy of the model saved before the
    calibration and given it, as an engine process is, has exactly the calibrated joint; and
    the draws are distinct layers, the same in every process."""
    model = load_nemo_model(TINY_MODEL, device="cpu")
    saved = load_nemo_model(TINY_MODEL, device="cpu")  # the same weights, as an engine process
    engine = AsrEngine(model, right_context=1)
    segments = calibration_segments(speech_audio(), count=1, seconds=1)
    calibration = calibrate_blank_bias(engine, segments, 9.0, rounds=2, draws=3)
    assert not calibration["converged"]
    assert [len(tried) for tried in calibration["tried"]] == [2, 2, 2]
    apply_calibration(saved, calibration)
    calibrated, given = model.joint.joint_net[-1], saved.joint.joint_net[-1]
    assert torch.equal(calibrated.weight, given.weight) and torch.equal(calibrated.bias, given.bias)
    weights = []
    for draw in (1, 2, 1):
        draw_joint_output(saved, draw)
        weights.append(saved.joint.joint_net[-1].weight.clone())
    assert torch.equal(weights[0], weights[2]) and not torch.equal(weights[0], weights[1])
