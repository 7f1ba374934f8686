"""The streaming engine on the generated model: exactness, batching, finalize semantics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nemotron_speech.asr import AsrEngine, AsrError, BufferFullError, StreamNotFoundError
from nemotron_speech.asr.audio import load_audio
from nemotron_speech.asr.features import LEAD_FRAMES, PCM_SCALE, IncrementalLogMel, MelFrontEnd
from nemotron_speech.asr.model import streaming_preprocessor
from nemotron_speech.testing.sentences import SENTENCES

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


def test_staggered_streams_batched_equal_each_alone(any_engine, speech):
    """All 16 utterances as streams that start one step apart, so every step mixes first and
    later chunks (two model calls); each final equals the utterance streamed alone."""
    engine = any_engine
    chunk = engine.geometry.chunk * engine.geometry.hop_samples * 2  # bytes per step
    packets = [pcm16(samples) for samples in speech]
    streams = [engine.open_stream() for _ in speech]
    finals: dict[int, tuple[int, ...]] = {}
    largest_batch, mixed_calls = 0, False
    tick = 0
    offsets = [0] * len(speech)
    while len(finals) < len(speech):
        for n, stream in enumerate(streams):
            if tick < n or stream in finals:
                continue
            piece = packets[n][offsets[n] : offsets[n] + chunk]
            offsets[n] += len(piece)
            if piece:
                engine.feed(stream, piece)
            elif not engine._stream(stream).finalizing:
                engine.request_finalize(stream, reset=True)
        for transcript in engine.step():
            if transcript.is_final:
                finals[transcript.stream_id] = transcript.token_ids
        largest_batch = max(largest_batch, engine.last_step.batch_size)
        mixed_calls = mixed_calls or engine.last_step.model_calls == 2
        tick += 1
    for n, stream in enumerate(streams):
        assert finals[stream] == engine.transcribe(speech[n]).token_ids, f"utterance {n}"
        engine.close(stream)
    assert largest_batch >= 4 and mixed_calls


def test_incremental_log_mel_equals_whole_utterance_log_mel(engine, speech):
    """The engine's front end: features computed piecewise as audio arrives (packets of several
    sizes, a batch of segments per packet) are exactly the preprocessor's features of the whole
    utterance."""
    front_end = MelFrontEnd(streaming_preprocessor(engine.model), engine.device)
    hop, window = engine.geometry.hop_samples, engine.geometry.window_samples
    for samples, packet in zip(speech, itertools.cycle((320, 1234, 4801)), strict=False):
        mel = IncrementalLogMel(hop, window)
        pieces = []
        for start in range(0, len(samples), packet):
            mel.add(samples[start : start + packet])
            final = start + packet >= len(samples)
            ready = mel.frames_available(mel.samples_seen, final) - mel.frames_emitted
            # two segments of the same stream in one batch: the first and the rest of the frames
            counts = [count for count in (ready // 2, ready - ready // 2) if count]
            segments = []
            for count in counts:
                segments.append(mel.segment(count))
                mel.advance(count)
            if counts:
                features = front_end(segments).numpy()
                for row, count in enumerate(counts):
                    pieces.append(features[row, :, LEAD_FRAMES : LEAD_FRAMES + count])
        whole = front_end([(0, samples / PCM_SCALE)]).numpy()[0, :, : len(samples) // hop]
        assert np.array_equal(np.concatenate(pieces, axis=1), whole)


def test_stream_audio_buffer_keeps_what_frames_need_through_a_backlog():
    """Each segment is exactly the audio its frames need (in PCM units) while the stream's buffer
    compacts, grows for a 12.5 s backlog and shrinks back after it."""
    rng = np.random.default_rng(0)
    mel, audio, sizes = IncrementalLogMel(160, 400), np.zeros(0, np.float32), set()
    for count in [320] * 50 + [200_000] + [320] * 1500:
        samples = rng.standard_normal(count).astype(np.float32)
        mel.add(samples)
        audio = np.concatenate([audio, samples])
        while mel.frames_available(mel.samples_seen, final=False) - mel.frames_emitted >= 16:
            lead, segment = mel.segment(16)
            start = (mel.frames_emitted - LEAD_FRAMES) * 160
            expected = audio[max(start, 0) : (mel.frames_emitted + 15) * 160 + 200]
            assert lead == max(0, -start) and np.array_equal(segment, expected / PCM_SCALE)
            mel.advance(16)
        sizes.add(len(mel._buffer))
    assert len(mel._buffer) == min(sizes) < max(sizes)


def test_flush_changes_nothing(engine, speech):
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


def test_interims_say_which_client_audio_made_them_available(engine, speech):
    """Every streamed chunk records how much of the client's audio (bytes from the stream's
    first) had to arrive for it to be ready, and its interim reports it (`audio_bytes`, which a
    server times its lag from): stepped after every 20 ms packet, that is the packet just fed.
    It stays so after a context-keeping finalize (whose padding is not the client's audio) and
    after a reset; a finalize's own chunks, made ready by the request, report none."""
    stream = engine.open_stream()
    state = engine._streams[stream]
    fed = chunks = interims = 0
    for index, then in ((3, "finalize"), (5, "reset"), (1, "finalize"), (3, None)):
        data = pcm16(speech[index])
        for start in range(0, len(data), 2 * PACKET):
            packet = data[start : start + 2 * PACKET]
            engine.feed(stream, packet)
            before, fed = fed, fed + len(packet)
            results = engine.step()
            if stream in engine.last_step.stream_ids:
                assert before < state.chunk_client_bytes <= fed
                chunks += 1
            for result in results:
                assert result.audio_bytes == state.chunk_client_bytes
                interims += 1
        if then is not None:
            engine.request_finalize(stream, reset=then == "reset")
            while not any(result.is_final for result in engine.step()):
                assert state.chunk_client_bytes is None
    engine.close(stream)
    assert chunks >= 4 * 15 and interims >= 5


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
