"""The streaming engine on the generated model: exactness, batching, finalize semantics."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nemotron_speech.asr import AsrEngine, AsrError, BufferFullError, StreamNotFoundError  # noqa: E402
from nemotron_speech.asr.audio import load_audio  # noqa: E402
from nemotron_speech.testing.sentences import SENTENCES  # noqa: E402

RIGHT_CONTEXTS = (0, 1, 6, 13)
PACKET = 320  # 20 ms


@pytest.fixture(scope="module")
def speech(speech_wavs) -> list[np.ndarray]:
    return [load_audio(wav) for wav in speech_wavs]


@pytest.fixture(scope="module", params=RIGHT_CONTEXTS, ids=lambda r: f"R{r}")
def any_engine(request, asr_model_path) -> AsrEngine:
    engine = AsrEngine.load(asr_model_path, right_context=request.param)
    engine.warmup()
    return engine


@pytest.fixture(scope="module")
def engine(asr_model_path) -> AsrEngine:
    engine = AsrEngine.load(asr_model_path, right_context=1)
    engine.warmup()
    return engine


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()


def test_streaming_equals_offline_and_sentence(any_engine, speech):
    for samples, sentence in zip(speech, SENTENCES, strict=True):
        final = any_engine.transcribe(samples)
        offline_ids, _ = any_engine.transcribe_offline(samples)
        assert list(final.token_ids) == offline_ids
        assert final.text == sentence


def test_geometry_follows_right_context(any_engine):
    assert any_engine.chunk_ms == 80 * (any_engine.right_context + 1)
    assert any_engine.supported_right_contexts == [0, 1, 6, 13]


def test_staggered_streams_batched_equal_each_alone(engine, speech):
    picked = [0, 5, 9, 12]
    starts = [0, 3, 7, 8]  # in 160 ms chunks, so each tick sees first and later steps mixed
    packets = [pcm16(speech[i]) for i in picked]
    streams = [engine.open_stream() for _ in picked]
    finals: dict[int, tuple[int, ...]] = {}
    largest_batch, mixed_calls = 0, False
    tick = 0
    offsets = [0] * len(picked)
    while len(finals) < len(picked):
        for n, stream in enumerate(streams):
            if tick < starts[n] or stream in finals:
                continue
            chunk = packets[n][offsets[n] : offsets[n] + 16 * PACKET]
            offsets[n] += len(chunk)
            if chunk:
                engine.feed(stream, chunk)
            elif not engine._stream(stream).finalizing:
                engine.request_finalize(stream, reset=True)
        for transcript in engine.step():
            if transcript.is_final:
                finals[transcript.stream_id] = transcript.token_ids
        largest_batch = max(largest_batch, engine.last_step.batch_size)
        mixed_calls = mixed_calls or engine.last_step.model_calls == 2
        tick += 1
    for n, stream in enumerate(streams):
        assert finals[stream] == engine.transcribe(speech[picked[n]]).token_ids
        engine.close(stream)
    assert largest_batch == len(picked) and mixed_calls


def test_soft_flush_changes_nothing(engine, speech):
    samples = speech[1]
    stream = engine.open_stream()
    half = len(samples) // 2
    engine.feed(stream, pcm16(samples[:half]))
    interims = [t.text for t in _drain(engine)]
    assert interims, "half a sentence must produce interims"
    assert engine.flush(stream) == interims[-1]
    assert engine.flush(stream) == interims[-1]
    engine.feed(stream, pcm16(samples[half:]))
    _drain(engine)
    final = engine.finalize(stream, reset=True)
    engine.close(stream)
    assert final.token_ids == engine.transcribe(samples).token_ids
    assert final.text == SENTENCES[1]


def test_reset_returns_utterance_and_next_starts_clean(engine, speech):
    stream = engine.open_stream()
    texts = []
    for index in (2, 7, 2):
        engine.feed(stream, pcm16(speech[index]))
        _drain(engine)
        final = engine.finalize(stream, reset=True)
        assert final.token_ids == engine.transcribe(speech[index]).token_ids
        texts.append(final.text)
    engine.close(stream)
    assert texts == [SENTENCES[2], SENTENCES[7], SENTENCES[2]]


def test_interims_only_on_change_and_never_for_silence(engine, speech):
    stream = engine.open_stream()
    engine.feed(stream, bytes(2 * 16000 * 2))  # two seconds of digital silence
    assert _drain(engine) == []
    for start in range(0, len(speech[3]), PACKET):
        engine.feed(stream, pcm16(speech[3][start : start + PACKET]))
    interims = _drain(engine)
    texts = [t.text for t in interims]
    assert texts and all(a != b for a, b in zip(texts, texts[1:], strict=False))
    assert not any(t.is_final for t in interims)
    assert engine.finalize(stream).text == SENTENCES[3]
    silent = engine.open_stream()
    engine.feed(silent, bytes(16000))
    assert _drain(engine) == []
    assert engine.finalize(silent).text == ""
    engine.close(stream)
    engine.close(silent)


def test_odd_sized_packets_carry_the_odd_byte(engine, speech):
    data = pcm16(speech[4])
    stream = engine.open_stream()
    for start in range(0, len(data), 333):
        engine.feed(stream, data[start : start + 333])
        _drain(engine)
    final = engine.finalize(stream, reset=True)
    engine.close(stream)
    assert final.token_ids == engine.transcribe(speech[4]).token_ids


def test_stream_errors_are_clear(engine):
    stream = engine.open_stream()
    with pytest.raises(AsrError, match="PCM16 bytes, got str"):
        engine.feed(stream, "hello")  # type: ignore[arg-type]
    with pytest.raises(BufferFullError, match="no faster than real time"):
        engine.feed(stream, bytes(2 * 16000 * 31))
    engine.close(stream)
    with pytest.raises(StreamNotFoundError, match=f"stream {stream} is not open"):
        engine.feed(stream, b"\0\0")
    with pytest.raises(StreamNotFoundError):
        engine.close(stream)


def test_engine_options_are_checked(engine):
    with pytest.raises(
        AsrError, match=r"precision must be one of \['bf16', 'fp16', 'fp32'\], got 'fp8'"
    ):
        AsrEngine(engine.model, precision="fp8")
    with pytest.raises(AsrError, match="cuda_graphs=True needs the model on a CUDA device"):
        AsrEngine(engine.model, cuda_graphs=True)
    with pytest.raises(AsrError, match="max_graph_batch must be at least 1, got 0"):
        AsrEngine(engine.model, max_graph_batch=0)


def test_empty_stream_finalizes_to_empty_text(engine):
    stream = engine.open_stream()
    final = engine.finalize(stream)
    engine.close(stream)
    assert (final.text, final.token_ids, final.is_final) == ("", (), True)


def _drain(engine: AsrEngine) -> list:
    out = []
    while engine.has_work():
        out.extend(engine.step())
    return out
