"""Which batch sizes get CUDA graphs; and, on a CUDA device, that the CUDA-graph engine (first
and later steps, shared static buffers, fast_layers) gives the eager fp32 engine's tokens and the
sentences at every right context. CI has no GPU, so the engine test is skipped there; on a GPU
machine run `python tests/test_cuda_graphs.py` (or pytest)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "assets" / "asr" / "tiny-asr.nemo"
WAVS = sorted((ROOT / "tests" / "assets" / "asr" / "speech").glob("*.wav"))


def test_graph_buckets_are_powers_of_two_up_to_the_largest_batch():
    from nemotron_speech.asr.graphs import graph_buckets

    assert graph_buckets(1) == [1]
    assert graph_buckets(64) == [1, 2, 4, 8, 16, 32, 64]
    assert graph_buckets(100) == [1, 2, 4, 8, 16, 32, 64, 100]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("right_context", (0, 1, 6, 13), ids=lambda r: f"R{r}")
def test_graphs_equal_eager_on_cuda(right_context):
    from nemotron_speech.asr import AsrEngine
    from nemotron_speech.asr.audio import load_audio
    from nemotron_speech.testing.sentences import SENTENCES

    options = {"right_context": right_context, "device": "cuda", "max_graph_batch": 8}
    eager = AsrEngine.load(MODEL, cuda_graphs=False, **options)
    graphs = AsrEngine.load(MODEL, cuda_graphs=True, **options)
    graphs.warmup()
    for wav, sentence in zip(WAVS, SENTENCES, strict=True):
        samples = load_audio(wav)
        reference = eager.transcribe(samples)
        final = graphs.transcribe(samples)
        assert final.token_ids == reference.token_ids, wav.name
        assert final.text == sentence, wav.name


if __name__ == "__main__":
    for r in (0, 1, 6, 13):
        test_graphs_equal_eager_on_cuda(r)
        print(f"R={r}: graphs == eager on {len(WAVS)} utterances")
