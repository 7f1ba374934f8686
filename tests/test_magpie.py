"""The Magpie engine on the generated test model, through NeMo's real `MagpieTTSModel`.

The model's weights are random: what is checked is the plumbing (streamed chunks equal the whole
decode, the length follows the text, a stop ends the audio, bad input is refused), not the sound.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.frame_processor import FrameDirection
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transcriptions.language import Language

from nemotron_speech.doctor import Options
from nemotron_speech.doctor.files import tts_check
from nemotron_speech.testing.make_magpie import CODEC_FILE, MAGPIE_FILE
from nemotron_speech.tts.magpie import (
    MagpieEngine,
    MagpieInputError,
    MagpieLoadError,
    MagpieModelNotFoundError,
    NemotronMagpieTTSService,
    codec_stream,
)
from nemotron_speech.voice_agent.config import BotConfig, add_arguments, make_tts

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "tests" / "assets" / "tts"
SHORT = "Hi."
LONG = "The quick brown fox jumps over the lazy dog, and then it runs far away."


@pytest.fixture(scope="module")
def engine() -> MagpieEngine:
    return MagpieEngine.load(ASSETS / MAGPIE_FILE, ASSETS / CODEC_FILE)


@pytest.fixture(scope="module")
def reference(engine) -> np.ndarray:
    """LONG, seed 0, decoded whole by NeMo's infer_batch."""
    return engine.synthesize(LONG, seed=0)


def streamed(engine: MagpieEngine, text: str, seed: int, **kwargs) -> list[np.ndarray]:
    chunks: list[np.ndarray] = []
    engine.stream(text, chunks.append, seed=seed, **kwargs)
    return chunks


def test_what_the_checkpoint_says(engine):
    assert engine.voices == ("0", "1")
    assert engine.languages == ("en",)
    assert (engine.sample_rate, engine.samples_per_frame) == (22050, 1024)  # the codec's
    assert engine.codec_stream is not None  # a causal decoder, like NanoCodec's: exact chunks


def test_streamed_chunks_concatenate_to_the_whole_decode(engine, reference):
    chunks = streamed(engine, LONG, 0)
    frame = engine.samples_per_frame
    assert len(chunks) > 2
    assert len(chunks[0]) == engine.first_chunk_frames * frame  # first audio after 4 frames
    assert {len(c) for c in chunks[1:-1]} == {engine.chunk_frames * frame}
    np.testing.assert_allclose(np.concatenate(chunks), reference, atol=1e-5, rtol=0)


def test_chunks_need_the_carried_decoder_state(engine, reference, monkeypatch):
    """Negative control: without the layers' carried inputs (every chunk decoded as if it
    started the utterance) the chunks are not the whole decode."""
    monkeypatch.setattr(codec_stream, "_stack", lambda states: None)
    joined = np.concatenate(streamed(engine, LONG, 0))
    assert joined.shape == reference.shape
    assert np.abs(joined - reference).max() > 1e-3


def test_audio_length_follows_the_text(engine, reference):
    assert len(reference) > len(engine.synthesize(SHORT, seed=0))
    assert len(engine.synthesize(LONG, seed=1)) > len(engine.synthesize(SHORT, seed=1))
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


# -- the Pipecat service ----------------------------------------------------------------------


class SpyEngine:
    """The real engine, with a log of when each chunk was made and when each call returned."""

    def __init__(self, engine: MagpieEngine):
        self._engine = engine
        self.sample_rate = engine.sample_rate
        self.events: list[tuple[float, str]] = []

    def stream(self, text, on_audio, *args, **kwargs):
        def spy(audio):
            self.events.append((time.monotonic(), "chunk"))
            on_audio(audio)

        finished = self._engine.stream(text, spy, *args, **kwargs)
        self.events.append((time.monotonic(), "finished" if finished else "stopped"))
        return finished


class FrameTimes(BaseObserver):
    """When the service pushed each frame downstream."""

    def __init__(self, service):
        super().__init__()
        self._service = service
        self.seen: list[tuple[float, Frame]] = []

    async def on_push_frame(self, data: FramePushed):
        if data.source is self._service and data.direction == FrameDirection.DOWNSTREAM:
            self.seen.append((time.monotonic(), data.frame))


async def test_the_service_speaks_in_a_pipeline(engine):
    tts = NemotronMagpieTTSService(engine=engine)
    params = PipelineParams(audio_out_sample_rate=16_000, enable_metrics=True)
    down, _ = await run_test(
        tts, frames_to_send=[TTSSpeakFrame("Hello there.")], pipeline_params=params
    )
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    order = [type(f) for f in down]
    first_audio = order.index(TTSAudioRawFrame)
    assert order.index(TTSStartedFrame) < first_audio < order.index(TTSStoppedFrame)
    assert {(f.sample_rate, f.num_channels) for f in audio} == {(16_000, 1)}  # resampled
    assert sum(len(f.audio) for f in audio) > 2 * engine.first_chunk_frames * 1024 * 16 / 22.05
    ttfb = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    assert any(isinstance(d, TTFBMetricsData) and d.value > 0 for d in ttfb)


async def test_an_interruption_stops_the_engine_within_one_chunk(engine):
    spy = SpyEngine(engine)
    tts = NemotronMagpieTTSService(engine=spy)  # type: ignore[arg-type]
    frames = FrameTimes(tts)
    text = " ".join([LONG] * 4)  # ~4 s of generation on a CPU, interrupted after 1 s
    sent = [TTSSpeakFrame(text), SleepFrame(1.0), InterruptionFrame(), SleepFrame(0.5)]
    await run_test(tts, frames_to_send=sent, observers=[frames])
    interrupted = next(t for t, f in frames.seen if isinstance(f, InterruptionFrame))
    chunks = [t for t, kind in spy.events if kind == "chunk"]
    assert chunks and chunks[0] < interrupted  # it was speaking
    assert spy.events[-1][1] == "stopped"  # not finished: stopped mid-text
    assert len([t for t in chunks if t > interrupted]) <= 1  # at most the chunk being decoded
    after = [f for t, f in frames.seen if t > interrupted and isinstance(f, TTSAudioRawFrame)]
    assert after == []  # and none of it reached the pipeline


def llm_reply(*tokens: str) -> list[Frame]:
    """An LLM's streamed answer, as the bot's TTS receives it."""
    return [LLMFullResponseStartFrame(), *map(LLMTextFrame, tokens), LLMFullResponseEndFrame()]


async def test_each_sentence_s_text_follows_its_audio_without_word_times(engine):
    """No word timings (Magpie has none): as with pipecat's Kokoro, Piper and Riva services, each
    sentence's text is one TTSTextFrame after that sentence's audio, which the assistant context
    and the page's bot-output captions take; an interrupted sentence's text never comes."""
    tts = NemotronMagpieTTSService(engine=engine)
    down, _ = await run_test(tts, frames_to_send=llm_reply("Hello ", "there. ", "How are ", "you?"))
    texts = [f for f in down if isinstance(f, TTSTextFrame)]
    assert [f.text for f in texts] == ["Hello there.", "How are you?"]
    assert all(f.text_type == "sentence" and f.pts is None and f.append_to_context for f in texts)
    audio_or_text = "".join(
        "T" if isinstance(f, TTSTextFrame) else "A"
        for f in down
        if isinstance(f, TTSAudioRawFrame | TTSTextFrame)
    )
    assert re.fullmatch("A+TA+T", audio_or_text), audio_or_text

    spy = SpyEngine(engine)
    tts = NemotronMagpieTTSService(engine=spy)  # type: ignore[arg-type]
    frames = FrameTimes(tts)
    sentence = ", ".join([LONG.rstrip(".")] * 3) + "."  # ~1 s of generation on a CPU, cut at 0.3
    sent = [*llm_reply(sentence), SleepFrame(0.3), InterruptionFrame(), SleepFrame(0.5)]
    down, _ = await run_test(tts, frames_to_send=sent, observers=[frames])
    interrupted = next(t for t, f in frames.seen if isinstance(f, InterruptionFrame))
    assert any(isinstance(f, TTSAudioRawFrame) for t, f in frames.seen if t < interrupted)
    assert spy.events[-1][1] == "stopped"  # cut mid-sentence
    assert not any(isinstance(f, TTSTextFrame) for f in down)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"voice": "9"}, "unknown voice '9'; this checkpoint has 0, 1"),
        # pipecat's de-DE reaches the engine as its base code
        ({"language": Language.DE_DE}, "unknown language 'de'; this checkpoint speaks en"),
    ],
)
async def test_a_bad_request_is_an_error_frame_not_a_crash(engine, setting, message):
    settings = NemotronMagpieTTSService.Settings(**setting)
    # no audio comes, so pipecat closes the turn after stop_frame_timeout_s
    tts = NemotronMagpieTTSService(engine=engine, settings=settings, stop_frame_timeout_s=0.2)
    down, up = await run_test(tts, frames_to_send=[TTSSpeakFrame("Hello.")])
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert any(message in e for e in errors), errors
    assert not any(isinstance(f, TTSAudioRawFrame) for f in down)


def test_the_bot_builds_magpie_from_its_flags(tmp_path):
    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--tts", "magpie", "--models-dir", str(tmp_path), "--tts-device", "cpu"]
    )
    with pytest.raises(FileNotFoundError, match="nemotron-speech download magpie"):
        make_tts(BotConfig.from_args(args))
    model, codec = str(ASSETS / MAGPIE_FILE), str(ASSETS / CODEC_FILE)
    args = parser.parse_args(
        ["--tts", "magpie", "--magpie-model", model, "--magpie-codec", codec, "--tts-device", "cpu"]
    )
    tts = make_tts(BotConfig.from_args(args))
    assert isinstance(tts, NemotronMagpieTTSService)
    assert tts._paths == (ASSETS / MAGPIE_FILE, ASSETS / CODEC_FILE)
    # loaded before any session starts, and one engine for all of a bot's sessions
    assert tts._engine is not None and make_tts(BotConfig.from_args(args))._engine is tts._engine


def test_the_doctor_checks_the_magpie_checkpoints(tmp_path):
    missing = tts_check(Options(tts="magpie", models_dir=str(tmp_path)))
    assert missing.failed and "nemotron-speech download magpie" in missing.fix
    broken = tmp_path / "broken.nemo"
    broken.write_bytes(b"not a tar")
    given = Options(tts="magpie", magpie_model=str(broken), magpie_codec=str(ASSETS / CODEC_FILE))
    assert "not a .nemo archive" in tts_check(given).detail
    good = Options(
        tts="magpie", magpie_model=str(ASSETS / MAGPIE_FILE), magpie_codec=str(ASSETS / CODEC_FILE)
    )
    assert not tts_check(good).failed


def test_the_tts_benchmark_runs_on_the_test_model(tmp_path, monkeypatch):
    """`python -m benchmarks.tts` (docs/benchmarks.md), small, in this process (NeMo loaded)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import tts as benchmark

    out = tmp_path / "tts.json"
    argv = ["--batches", "1,2", "--frames", "12", "--rounds", "1", "--more-chunks", "4"]
    benchmark.main([*argv, "--json", str(out)])
    result = json.loads(out.read_text())
    rows = [(row["steps"], row["batch"], row["chunk"]) for row in result["rows"]]
    assert rows == [("nemo", 1, 8), ("nemo", 2, 8), ("nemo", 1, 4)]  # the engine's CPU default
    frame_s = 1024 / 22050
    for row in result["rows"]:
        assert row["audio_s"] == round(12 * frame_s, 3)  # the length the benchmark fixes
        assert 0 < row["first_audio_p50_ms"] <= row["stream_wall_p50_ms"]
