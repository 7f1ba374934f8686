"""A pause inside a turn costs no words: the context-keeping finalize against the reset, through
the engine at every right context (the server and services have their own pause tests)."""

from __future__ import annotations

import numpy as np
import pytest

from nemotron_speech.asr import AsrEngine
from nemotron_speech.asr.audio import load_audio
from nemotron_speech.testing.pauses import same_words, with_pause
from nemotron_speech.testing.sentences import SENTENCES

PACKET = 320  # 20 ms


@pytest.fixture(scope="module")
def turns(speech_wavs) -> list[tuple[np.ndarray, int]]:
    return [with_pause(index, load_audio(wav)) for index, wav in enumerate(speech_wavs)]


@pytest.fixture(scope="module", params=(0, 1, 6, 13), ids=lambda r: f"R{r}")
def engine(request, asr_model_path) -> AsrEngine:
    engine = AsrEngine.load(asr_model_path, right_context=request.param)
    engine.warmup()
    return engine


def speak(engine: AsrEngine, audio: np.ndarray, vad_stop: int, reset: bool) -> list:
    """Stream a turn in 20 ms packets as the STT services do: a finalize (or reset) at the VAD
    stop, audio going on meanwhile, and a reset at the end of the conversation."""
    stream = engine.open_stream()
    finals = []
    pcm = (np.clip(audio, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()
    for start in range(0, len(audio), PACKET):
        if start <= vad_stop < start + PACKET:
            engine.request_finalize(stream, reset=reset)
        while reset and engine._stream(stream).resetting:  # a reset takes no audio meanwhile
            finals += [t for t in engine.step(only=(stream,)) if t.is_final]
        engine.feed(stream, pcm[2 * start : 2 * (start + PACKET)])
        finals += [t for t in engine.step(only=(stream,)) if t.is_final]
    finals.append(engine.finalize(stream, reset=True))
    engine.close(stream)
    return finals


def test_finals_of_a_turn_with_a_pause_say_the_whole_sentence(engine, turns):
    """Context kept: every sentence comes out whole; a reset at the same place (the services'
    old behaviour) loses or changes words in several of them."""
    kept_ok, reset_ok = 0, 0
    for (audio, vad_stop), sentence in zip(turns, SENTENCES, strict=True):
        kept = speak(engine, audio, vad_stop, reset=False)
        assert len(kept) == 2 and kept[0].text, "the pause's final holds the first words"
        tokens = [token for final in kept for token in final.token_ids]
        assert engine._decoder.text(tokens) == sentence
        kept_ok += same_words([final.text for final in kept], sentence)
        reset_ok += same_words([final.text for final in speak(engine, audio, vad_stop, True)],
                               sentence)  # fmt: skip
    assert kept_ok == len(SENTENCES)
    assert reset_ok <= len(SENTENCES) - 4, f"reset kept {reset_ok} of 16 sentences whole"


def test_audio_during_a_finalize_follows_its_padding(engine, turns):
    """Feeding while the final is pending neither raises nor changes the words."""
    audio, vad_stop = turns[3]
    stream = engine.open_stream()
    pcm = (np.clip(audio, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()
    engine.feed(stream, pcm[: 2 * vad_stop])
    engine.request_finalize(stream)
    engine.feed(stream, pcm[2 * vad_stop :])  # all of the rest at once, before any step
    finals = []
    while engine.has_work():
        finals += [t.text for t in engine.step() if t.is_final]
    finals.append(engine.finalize(stream, reset=True).text)
    engine.close(stream)
    assert len(finals) == 2 and same_words(finals, SENTENCES[3])


def test_a_reset_refuses_audio_until_its_final(engine, turns):
    audio, vad_stop = turns[0]
    stream = engine.open_stream()
    engine.feed(stream, (audio[:vad_stop] * 32767).astype("<i2").tobytes())
    engine.request_finalize(stream, reset=True)
    with pytest.raises(Exception, match="is resetting; wait for its final transcript"):
        engine.feed(stream, b"\0\0")
    engine.close(stream)
