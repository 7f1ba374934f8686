"""Batched == alone in the precisions the engine serves, on the CPU: streams join and leave a
running engine mid-utterance, finalize with and without reset, and batch at sizes that are no
power of two (`batching_schedule.py`); every stream's interims, finals and token ids equal the
same stream stepped alone on the same engine. bf16 runs the encoder cast (bf16 signal and slot
caches, fp32 decoder) over `fast_layers`, as the GPU serves it; fp32 runs NeMo's own modules, the
exactness reference. The CPU has no CUDA-graph buckets, so padding a batch up to a bucket is
covered only by the GPU half (`python tests/test_cuda_graphs.py`); here a reset's short last
chunk is padded in time beside full chunks, and NeMo's CUDA-graph decoder's padded returns are
replayed on NeMo's own CPU decoding."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from batching_schedule import compare

from nemotron_speech.asr import AsrEngine
from nemotron_speech.asr.audio import load_audio
from nemotron_speech.testing.sentences import SENTENCES

VARIANTS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16", "fast_layers": True}}


@pytest.fixture(scope="module")
def clips(speech_wavs) -> list[np.ndarray]:
    return [load_audio(wav) for wav in speech_wavs]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("right_context", (1, 6), ids=lambda r: f"R{r}")
def test_joining_and_leaving_streams_equal_alone(asr_model_path, clips, right_context, variant):
    engine = AsrEngine.load(asr_model_path, right_context=right_context, **VARIANTS[variant])
    comparison = compare(engine, clips)
    comparison.check(SENTENCES if variant == "fp32" else None)


def _padded(tensor: torch.Tensor, dim: int = 0, rows: int = 3) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = rows
    return torch.cat([tensor, torch.full(shape, 7, dtype=tensor.dtype)], dim=dim)


class _CapturedBatchReturns:
    """NeMo's label looping as its CUDA graphs return it (GPU only, so replayed here): the
    decoding state and hypotheses of the batch it captured, rows past the current batch."""

    def __init__(self, computer):
        self._computer = computer

    def __call__(self, x, out_len, prev_batched_state):
        hyps, state = self._computer(x=x, out_len=out_len, prev_batched_state=prev_batched_state)
        padded_hyps = SimpleNamespace(
            current_lengths=_padded(hyps.current_lengths), transcript=_padded(hyps.transcript)
        )
        padded_state = dataclasses.replace(
            state,
            predictor_states=tuple(_padded(s, dim=1) for s in state.predictor_states),
            predictor_outputs=_padded(state.predictor_outputs),
            labels=_padded(state.labels),
            decoded_lengths=_padded(state.decoded_lengths),
        )
        return padded_hyps, padded_state


def test_a_decoder_returning_its_captured_batch_gives_the_same_results(asr_model_path, clips):
    """The slot decoder keeps only its batch's rows of what NeMo returns (`--cuda-graph-decoder`
    returns the captured batch, padded): the schedule still equals alone, with the sentences."""
    engine = AsrEngine.load(asr_model_path, right_context=1)
    engine._decoder._computer = _CapturedBatchReturns(engine._decoder._computer)
    compare(engine, clips).check(SENTENCES)
