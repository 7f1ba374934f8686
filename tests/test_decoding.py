"""The lock-step greedy decode (`asr/decoding.py`) against NeMo's label-looping computer.

The engine's CUDA graphs run every round (`stop_early=False`); eager steps stop a frame's rounds
once no stream searches. Both must give NeMo's tokens and leave NeMo's decoder state, for
streams of different lengths, from a carried-over state, and where a frame hits `max_symbols`
(which random encoder output with the blank logit pushed down makes every frame do). Decoding
configurations it does not run (word boosting, no bound per frame) are refused, not ignored.
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import open_dict

from nemotron_speech.asr.decoding import SlotGreedyDecoder
from nemotron_speech.asr.errors import ModelLoadError
from nemotron_speech.asr.model import load_nemo_model
from nemotron_speech.asr.slots import SlotStore


@pytest.fixture(scope="module")
def model(asr_model_path):
    return load_nemo_model(asr_model_path)


def _nemo(model, encoded, lengths, state):
    """NeMo's computer from `state` (hidden, cell, output): (tokens per row, its next state)."""
    from nemo.collections.asr.parts.submodules.transducer_decoding.label_looping_base import (
        BatchedLabelLoopingState,
    )

    computer = model.decoding.decoding.decoding_computer
    hidden, cell, output = state
    previous = BatchedLabelLoopingState(
        predictor_states=(hidden, cell),
        predictor_outputs=output,
        labels=torch.zeros(len(lengths), dtype=torch.long),
        decoded_lengths=torch.zeros(len(lengths), dtype=torch.long),
    )
    hyps, next_state = computer(
        x=encoded.transpose(1, 2), out_len=lengths, prev_batched_state=previous
    )
    tokens = [
        hyps.transcript[row, :count].tolist()
        for row, count in enumerate(hyps.current_lengths.tolist())
    ]
    return tokens, (*next_state.predictor_states, next_state.predictor_outputs)


def _start_state(decoder, model, batch: int, generator) -> list[torch.Tensor]:
    """A batch's decoder state after some tokens: the predictor fed random labels."""
    labels = torch.randint(0, decoder.blank, (batch, 1), generator=generator)
    predict = model.decoder.predict
    output, (hidden, cell), *_ = predict(labels, None, add_sos=False, batch_size=batch)
    return [hidden, cell, model.joint.project_prednet(output)]


@pytest.mark.parametrize("blank_push", (0.0, -50.0), ids=("trained", "max-symbols"))
@pytest.mark.parametrize("stop_early", (False, True), ids=("graph-rounds", "eager"))
@torch.inference_mode()
def test_lock_step_decode_equals_nemo(model, blank_push, stop_early):
    decoder = SlotGreedyDecoder(model, SlotStore(torch.device("cpu")))
    generator = torch.Generator().manual_seed(7)
    batch, frames = 6, 4
    encoded = torch.randn(batch, model.cfg.encoder.d_model, frames, generator=generator)
    lengths = torch.tensor([4, 4, 3, 2, 1, 0])
    state = _start_state(decoder, model, batch, generator)
    bias = model.joint.joint_net[-1].bias
    saved = bias[decoder.blank].item()
    bias[decoder.blank] += blank_push
    try:
        expected_tokens, expected_state = _nemo(model, encoded, lengths, [t.clone() for t in state])
        labels = decoder.decode(encoded, lengths, state, stop_early=stop_early)
    finally:
        bias[decoder.blank] = saved
    assert decoder.tokens(labels) == expected_tokens
    assert any(expected_tokens), "the case decodes nothing: it tests nothing"
    if blank_push:  # every frame of every row emitted max_symbols labels
        counts = [len(row) for row in expected_tokens]
        assert counts == [decoder.max_symbols * length for length in lengths.tolist()]
    for ours, theirs in zip(state, expected_state, strict=True):
        assert torch.equal(ours, theirs)


@torch.inference_mode()
def test_two_calls_carry_the_state_as_one_call_over_both(model):
    """A stream's frames decoded in two steps give the tokens and state of one NeMo call."""
    decoder = SlotGreedyDecoder(model, SlotStore(torch.device("cpu")))
    generator = torch.Generator().manual_seed(11)
    encoded = torch.randn(3, model.cfg.encoder.d_model, 6, generator=generator)
    lengths = torch.tensor([6, 6, 6])
    state = _start_state(decoder, model, 3, generator)
    expected_tokens, expected_state = _nemo(model, encoded, lengths, [t.clone() for t in state])
    halves = (encoded[:, :, :3], encoded[:, :, 3:])
    labels = [decoder.decode(half, torch.tensor([3, 3, 3]), state) for half in halves]
    tokens = [a + b for a, b in zip(*map(decoder.tokens, labels), strict=True)]
    assert tokens == expected_tokens and any(tokens)
    for ours, theirs in zip(state, expected_state, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"max_symbols": None, "max_symbols_per_step": None}, "no bound"),
        (
            {"boosting_tree": {"key_phrases_list": ["the"], "context_score": 5.0}},
            "word boosting",
        ),
    ],
    ids=("no-bound-per-frame", "word-boosting"),
)
def test_decoding_it_does_not_run_is_refused(asr_model_path, setting, message):
    fresh = load_nemo_model(asr_model_path)
    config = copy.deepcopy(fresh.cfg.decoding)
    with open_dict(config):
        config.greedy.update(setting)
    fresh.change_decoding_strategy(config, verbose=False)
    with pytest.raises(ModelLoadError, match=message):
        SlotGreedyDecoder(fresh, SlotStore(torch.device("cpu")))
