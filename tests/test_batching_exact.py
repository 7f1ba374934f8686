"""Batched == alone in the precisions the engine serves, on the CPU: streams join and leave a
running engine mid-utterance, finalize with and without reset, and batch at sizes that are no
power of two (`batching_schedule.py`); every stream's interims, finals and token ids equal the
same stream stepped alone on the same engine. bf16 runs the encoder cast (bf16 signal and slot
caches, fp32 decoder) over `fast_layers`, as the GPU serves it; fp32 runs NeMo's own modules, the
exactness reference. The CPU has no CUDA-graph buckets, so padding a batch up to a bucket is
covered only by the GPU half (`python tests/test_cuda_graphs.py`); here a reset's short last
chunk is padded in time beside full chunks."""

from __future__ import annotations

import numpy as np
import pytest
from batching_schedule import SCHEDULE, compare, run, without_ticks

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


def test_steps_launched_before_the_last_is_finished_report_the_same(asr_model_path, clips):
    """As the server steps: each step is launched before the previous one is finished, so
    streams close (their slot reused at once), finalize and reset with a chunk in flight. Every
    stream reports the same interims and finals, in order, as stepped one step at a time (one
    that closes, a prefix: its chunk in flight reports nothing), and
    the pipelined schedule is still batched == alone."""
    engine = AsrEngine.load(asr_model_path, right_context=1)
    stepped = run(engine, clips)
    comparison = compare(engine, clips, pipelined=True)
    comparison.check(SENTENCES)
    for plan, pipelined, alone in zip(
        SCHEDULE, without_ticks(comparison.batched), without_ticks(stepped), strict=True
    ):
        if plan.close is None:
            assert pipelined == alone, plan
        else:  # what was in flight when it closed is not reported
            assert pipelined == alone[: len(pipelined)] and len(pipelined) >= 2, plan
    assert comparison.batched.reports != stepped.reports  # pipelined: reports came a tick later
