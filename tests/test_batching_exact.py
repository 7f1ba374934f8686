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
