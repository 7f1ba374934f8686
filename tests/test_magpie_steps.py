"""The Magpie engine's static decoder steps (`steps="static"`: what its CUDA graphs replay)
against NeMo's own per-frame calls, on the generated test model (CPU).

The static steps restate NeMo's decoder step, local transformer and sampling for fixed shapes;
for the same seed they must give NeMo's codes. The CUDA half (graphs replaying these steps, and
the full-size model) is `tests/test_magpie_cuda.py`, run on a GPU machine.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from nemotron_speech.testing.make_magpie import CODEC_FILE, MAGPIE_FILE
from nemotron_speech.tts.magpie import MagpieEngine

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "tests" / "assets" / "tts"
LONG = "The quick brown fox jumps over the lazy dog, and then it runs far away."
TEXTS = ("Hi.", LONG, "Hello there. Bye.")  # 6 text tokens (no prior), 72, two sentences


@pytest.fixture(scope="module")
def model():
    return MagpieEngine.load(ASSETS / MAGPIE_FILE, ASSETS / CODEC_FILE).model


@pytest.fixture
def counts(monkeypatch) -> dict[str, int]:
    """Calls of each static step (engines made after this fixture count)."""
    from nemotron_speech.tts.magpie import graphs

    calls = {"decoder": 0, "local": 0, "parallel": 0}
    for name, function in (
        ("decoder", graphs.decoder_step),
        ("local", graphs.sample_local),
        ("parallel", graphs.sample_parallel),
    ):

        def counted(*args, _name=name, _function=function):
            calls[_name] += 1
            return _function(*args)

        monkeypatch.setattr(graphs, f"{function.__name__}", counted)
    return calls


def both(engine: MagpieEngine, text: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(NeMo's audio, the static steps' audio) for `text` and `seed`."""
    engine.steps = "nemo"
    nemo = engine.synthesize(text, seed=seed)
    engine.steps = "static"
    static = engine.synthesize(text, seed=seed)
    return nemo, static


def test_static_steps_give_nemo_s_audio(model, counts):
    engine = MagpieEngine(model, steps="static")
    runs = [(TEXTS[0], 0), (TEXTS[1], 0), (TEXTS[1], 1), (TEXTS[2], 0)]
    for text, seed in runs:
        nemo, static = both(engine, text, seed)
        assert nemo.size > 0
        np.testing.assert_allclose(static, nemo, atol=1e-6, rtol=0, err_msg=f"{text} {seed}")
    # every frame after the first went through the static decoder step (the first is NeMo's
    # own call, which fills the caches); every frame's sampling through the static samplers
    calls = sum(len(engine.check(text).sentences) for text, _ in runs)
    assert counts["decoder"] > 100
    assert counts["local"] == counts["parallel"] == counts["decoder"] + calls
    # the model's own methods are back after each call
    patched = {"forward", "sample_codes_from_logits", "construct_inference_prior"}
    assert not patched & set(vars(model))
    assert type(model._lt_helper).__name__ == "LocalTransformerHelper"


def test_a_batch_on_static_steps_is_nemo_s_batch(model):
    """Two requests with different speakers, text lengths and sentence counts: rows end at
    different steps (finished-sentence tracking forces EOS per row) and pad the text."""
    engine = MagpieEngine(model)
    requests = [engine.check(LONG, voice="0"), engine.check("Hello there. Bye.", voice="1")]
    audio = {}
    for steps in ("nemo", "static"):
        engine.steps = steps
        parts: dict[int, list[np.ndarray]] = {0: [], 1: []}
        assert engine.run(requests, lambda i, chunk, parts=parts: parts[i].append(chunk), seed=3)
        audio[steps] = [np.concatenate(parts[i]) for i in (0, 1)]
    assert len(audio["nemo"][0]) != len(audio["nemo"][1])
    for nemo, static in zip(audio["nemo"], audio["static"], strict=True):
        np.testing.assert_allclose(static, nemo, atol=1e-6, rtol=0)


def test_many_attention_and_text_buckets(model, monkeypatch):
    """Short buckets: a generation crosses several attention lengths (each its own step) and
    texts of several lengths get padded buckets; the audio stays NeMo's."""
    from nemotron_speech.tts.magpie import graphs

    monkeypatch.setattr(graphs, "LENGTH_STEP", 8)
    monkeypatch.setattr(graphs, "MIN_TEXT_BUCKET", 4)
    engine = MagpieEngine(model, steps="static")
    for text in ("Hi.", LONG):
        nemo, static = both(engine, text, 2)
        np.testing.assert_allclose(static, nemo, atol=1e-6, rtol=0, err_msg=text)
    spans = {key[0] for key in engine._static["static"]._decoders}
    assert len(spans) > 3


def test_learnable_positions(model, monkeypatch):
    """The released decoder adds learnable position embeddings (the test model's has none):
    random ones, added the way NeMo's config does, change the audio and keep it NeMo's."""
    import torch

    before = MagpieEngine(model).synthesize(LONG, seed=0)
    torch.manual_seed(0)
    table = torch.nn.Embedding(model.decoder.layers[0].self_attention.causal_mask.size(-1), 32)
    monkeypatch.setattr(model.decoder, "use_learnable_pos_emb", True)
    monkeypatch.setattr(model.decoder, "position_embeddings", table)
    nemo, static = both(MagpieEngine(model), LONG, 0)
    assert nemo.shape != before.shape or np.abs(nemo - before).max() > 1e-3
    np.testing.assert_allclose(static, nemo, atol=1e-6, rtol=0)


def test_the_comparison_sees_the_attention_prior(model, monkeypatch):
    """Negative control: static steps that drop NeMo's attention prior give audio the
    comparisons above would refuse."""
    from nemotron_speech.tts.magpie import graphs

    decoder_step = graphs.decoder_step

    def without_prior(model, cache, text, length, prior_layers):
        return decoder_step(model, cache, text, length, (False,) * len(prior_layers))

    monkeypatch.setattr(graphs, "decoder_step", without_prior)
    nemo, static = both(MagpieEngine(model), LONG, 0)
    assert nemo.shape != static.shape or np.abs(nemo - static).max() > 1e-6


def test_static_steps_stream_and_stop(model):
    """Streamed chunks on static steps join into NeMo's whole decode; a stop ends the call and
    the next one starts clean."""
    engine = MagpieEngine(model)
    whole = engine.synthesize(LONG, seed=0)
    engine.steps = "static"
    chunks: list[np.ndarray] = []
    assert not engine.stream(LONG, chunks.append, seed=0, should_stop=lambda: len(chunks) > 0)
    assert len(chunks) == 1
    chunks.clear()
    assert engine.stream(LONG, chunks.append, seed=0)
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-5, rtol=0)


def test_static_steps_in_bf16(model):
    """Under autocast the caches are bf16: the static buffers follow, the audio stays NeMo's."""
    engine = MagpieEngine(model, precision="bf16")
    nemo, static = both(engine, LONG, 1)
    np.testing.assert_allclose(static, nemo, atol=1e-6, rtol=0)


def test_steps_that_cannot_run_are_refused(model, monkeypatch):
    with pytest.raises(ValueError, match="steps must be one of nemo, static, graphs, not 'fast'"):
        MagpieEngine(model, steps="fast")
    with pytest.raises(ValueError, match="CUDA graphs need the model on a CUDA device"):
        MagpieEngine(model, steps="graphs")
    monkeypatch.setattr(model.decoder.layers[1], "use_moe", True)
    with pytest.raises(ValueError, match="do not support a mixture-of-experts decoder"):
        MagpieEngine(model, steps="static")
    engine = MagpieEngine(model)  # NeMo's own steps take any decoder
    with pytest.raises(ValueError, match="mixture-of-experts"):
        engine.steps = "static"
    assert engine.steps == "nemo"
    monkeypatch.undo()
    monkeypatch.setattr(model, "use_kv_cache_for_inference", False)
    engine = MagpieEngine(model, steps="static")
    with pytest.raises(ValueError, match="stand in for NeMo's KV-cached decoder calls"):
        engine.synthesize("Hi.")


def test_cuda_graphs_are_the_default_on_cuda_only(model, monkeypatch, caplog):
    """Graphs where the model is on a CUDA device (measured ~5x faster, NeMo's codes in fp32);
    NeMo's calls on a CPU, and, with a warning, for a decoder the graph steps cannot take."""
    import torch

    from nemotron_speech.tts.magpie.engine import default_steps
    from nemotron_speech.tts.magpie.engine import log as engine_log

    # the engine's warnings straight to caplog: an earlier test's logging setup (a dictConfig
    # disables the loggers that exist then) must not decide what this test sees
    monkeypatch.setattr(engine_log, "disabled", False)
    monkeypatch.setattr(engine_log, "propagate", False)
    monkeypatch.setattr(engine_log, "handlers", [caplog.handler])
    caplog.set_level(logging.WARNING, logger=engine_log.name)
    assert MagpieEngine(model).steps == "nemo"
    assert default_steps(model, torch.device("cpu")) == "nemo"
    assert default_steps(model, torch.device("cuda", 1)) == "graphs"
    assert not caplog.records
    with monkeypatch.context() as patch:
        patch.setattr(model.decoder.layers[0], "use_moe", True)
        assert default_steps(model, torch.device("cuda")) == "nemo"
    monkeypatch.setattr(model, "use_kv_cache_for_inference", False)
    assert default_steps(model, torch.device("cuda")) == "nemo"
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        "Magpie on cuda runs NeMo's own steps: CUDA graphs do not support a mixture-of-experts "
        "decoder",
        "Magpie on cuda runs NeMo's own steps: CUDA graphs do not support NeMo's uncached "
        "decoder path",
    ]


def test_the_tts_benchmark_compares_steps(tmp_path, monkeypatch):
    """`python -m benchmarks.tts --steps nemo,static` (docs/benchmarks.md), small."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import tts as benchmark

    out = tmp_path / "tts.json"
    argv = ["--steps", "nemo,static", "--batches", "1,2", "--frames", "8", "--rounds", "1"]
    benchmark.main([*argv, "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(row["steps"], row["batch"]) for row in rows] == [
        ("nemo", 1),
        ("static", 1),
        ("nemo", 2),
        ("static", 2),
    ]
    assert len({row["audio_s"] for row in rows}) == 1
