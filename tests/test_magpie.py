"""The Magpie engine on the generated test model, through NeMo's real `MagpieTTSModel`.

The model's weights are random: what is checked is the plumbing (streamed chunks equal the whole
decode, the length follows the text, a stop ends the audio, bad input is refused), not the sound.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nemo")

from nemotron_speech.testing.make_magpie import CODEC_FILE, MAGPIE_FILE  # noqa: E402
from nemotron_speech.tts.magpie import (  # noqa: E402
    MagpieEngine,
    MagpieInputError,
    MagpieLoadError,
    MagpieModelNotFoundError,
)

ASSETS = Path(__file__).resolve().parent / "assets" / "tts"
SHORT = "Hi."
LONG = "The quick brown fox jumps over the lazy dog, and then it runs far away."


@pytest.fixture(scope="module")
def engine() -> MagpieEngine:
    return MagpieEngine.load(ASSETS / MAGPIE_FILE, ASSETS / CODEC_FILE)


def streamed(engine: MagpieEngine, text: str, seed: int, **kwargs) -> list[np.ndarray]:
    chunks: list[np.ndarray] = []
    engine.stream(text, chunks.append, seed=seed, **kwargs)
    return chunks


def test_what_the_checkpoint_says(engine):
    assert engine.voices == ("0", "1")
    assert engine.languages == ("en",)
    assert (engine.sample_rate, engine.samples_per_frame) == (22050, 1024)  # the codec's
    assert engine.history_frames == 14  # the test codec's causal receptive field, rounded up


@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_chunks_concatenate_to_the_whole_decode(engine, seed):
    whole = engine.synthesize(LONG, seed=seed)
    chunks = streamed(engine, LONG, seed)
    frame = engine.samples_per_frame
    assert len(chunks) > 2
    assert len(chunks[0]) == engine.first_chunk_frames * frame  # first audio after 4 frames
    assert {len(c) for c in chunks[1:-1]} == {engine.chunk_frames * frame}
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-5, rtol=0)


def test_too_little_decoder_history_breaks_exactness(engine, monkeypatch):
    """Negative control: the history the engine computes is what makes the chunks exact."""
    whole = engine.synthesize(LONG, seed=0)
    monkeypatch.setattr(engine, "history_frames", 0)
    joined = np.concatenate(streamed(engine, LONG, 0))
    assert joined.shape == whole.shape
    assert np.abs(joined - whole).max() > 1e-3


def test_audio_length_follows_the_text(engine):
    for seed in range(3):
        short, long = (len(engine.synthesize(text, seed=seed)) for text in (SHORT, LONG))
        assert long > short, seed
    # each sentence is generated on its own, so three sentences give about three times the audio
    one = len(engine.synthesize("Hello there.", seed=0))
    three = len(engine.synthesize("Hello there. Hello there. Hello there.", seed=0))
    assert three > 2 * one


def test_a_batch_streams_each_request_as_if_it_ran_alone(engine, monkeypatch):
    """Greedy decoding makes a request's audio independent of its batch neighbours; the two
    requests end at different steps and have different sentence counts."""
    monkeypatch.setattr(engine.model.inference_parameters, "topk", 1)
    texts = (LONG, "Hello there. Bye.")
    alone = [engine.synthesize(text, seed=0) for text in texts]
    parts: dict[int, list[np.ndarray]] = {0: [], 1: []}
    requests = [engine.check(text) for text in texts]
    assert engine.run(requests, lambda i, audio: parts[i].append(audio), seed=0)
    for i, expected in enumerate(alone):
        np.testing.assert_allclose(np.concatenate(parts[i]), expected, atol=1e-5, rtol=0)


def test_a_stop_ends_generation_at_the_next_decoder_step(engine):
    chunks: list[np.ndarray] = []
    done = engine.stream(LONG, chunks.append, seed=0, should_stop=lambda: bool(chunks))
    assert done is False
    assert len(chunks) == 1
    # the engine is usable afterwards, and NeMo's do_tts too (the KV cache was reset)
    assert len(engine.synthesize(SHORT, seed=0)) > 0
    audio, _ = engine.model.do_tts(SHORT, speaker_index=1)
    assert audio.shape[-1] > 0


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("", {}, "empty text"),
        ("  \n", {}, "empty text"),
        ("x" * 2_001, {}, "text of 2001 characters is longer than the 2000"),
        (SHORT, {"voice": "aria"}, "unknown voice 'aria'; this checkpoint has 0, 1"),
        (SHORT, {"language": "de"}, "unknown language 'de'; this checkpoint speaks en"),
        ("abcdefgh " * 40, {}, "is longer than the 255 the model reads at once"),
        ("\U0001f600 \U0001f600", {}, "is speakable in 'en'"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(engine, text, options, message):
    with pytest.raises(MagpieInputError, match=message.replace("(", r"\(")):
        engine.check(text, **options)


def test_missing_or_wrong_files_name_the_path(tmp_path):
    missing = tmp_path / "magpie.nemo"
    with pytest.raises(MagpieModelNotFoundError, match=f"{missing}.*nemotron-speech download"):
        MagpieEngine.load(missing, ASSETS / CODEC_FILE)
    with pytest.raises(MagpieLoadError, match="tiny-codec.nemo is a AudioCodecModel, not a Magpie"):
        MagpieEngine.load(ASSETS / CODEC_FILE, ASSETS / CODEC_FILE)
