"""`NemotronSTTService` against the real ASR server on loopback (generated model, right context 1),
fed espeak speech paced in real time through the real Silero VAD."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from itertools import chain

import numpy as np
import pytest
import soxr
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    STTMetadataFrame,
    STTUpdateSettingsFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import STTUsageMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test
from server_fixtures import TOKEN, running_server
from test_server_failures import served, url

from nemotron_speech.llm.launcher import free_port
from nemotron_speech.protocol import Finalize, Ready, Reset, encode
from nemotron_speech.services.stt import NemotronSTTService, _ReplayLog
from nemotron_speech.services.ttfs import NEMOTRON_TTFS_P99
from nemotron_speech.testing.sentences import SENTENCES
from nemotron_speech.testing.stt_pipeline import (
    FinalsTap,
    check_turns,
    conversation,
    metrics,
    of_type,
    paced,
    pcm16,
    run_stt,
    silence,
    wait_for,
)

TURNS = [11, 2]  # short sentences without commas: one VAD segment each


@pytest.fixture
def server(token_asr_server):
    """The session's server with a token (tests/conftest.py)."""
    return token_asr_server


def service(url: str, token: str | None = TOKEN, **kwargs) -> NemotronSTTService:
    settings = NemotronSTTService.Settings(url=url)
    return NemotronSTTService(settings=settings, auth_token=token, **kwargs)


async def test_each_turn_ends_with_one_finalized_transcript(server, speech_wavs):
    audio, spans = conversation(speech_wavs[i] for i in TURNS)
    stt = service(server.url)
    down, up = await run_stt(
        stt, lambda tap: chain(paced(audio), wait_for(lambda: len(tap.finals) == len(TURNS), 10))
    )
    check_turns(down, [SENTENCES[i] for i in TURNS], spans)
    assert of_type(down, STTMetadataFrame)[0].ttfs_p99_latency == NEMOTRON_TTFS_P99
    usage = sum(data.value.audio_seconds for data in metrics(down, STTUsageMetricsData))
    assert usage == pytest.approx(len(audio) / 32000, abs=0.05)
    assert not of_type(up, ErrorFrame)
    assert stt.server_ready.right_context == 1


async def test_a_new_url_moves_the_stream(server, speech_wavs):
    """A settings update with another URL reconnects (at once: nobody is speaking yet)."""
    stt = service(server.url)
    connections = []

    @stt.event_handler("on_connected")
    async def on_connected(service):
        connections.append(service.server_ready)

    other_url = NemotronSTTService.Settings(url=server.url.replace("127.0.0.1", "localhost"))
    audio, spans = conversation([speech_wavs[11]])
    down, _ = await run_stt(
        stt,
        lambda tap: chain(
            [STTUpdateSettingsFrame(delta=other_url)],
            paced(audio),
            wait_for(lambda: tap.finals, 10),
        ),
    )
    check_turns(down, [SENTENCES[11]], spans)
    assert len(connections) == 2 and stt._settings.url == other_url.url


@pytest.mark.slow
async def test_server_killed_and_restarted_mid_turn(asr_model_path, speech_wavs, tmp_path):
    """SIGKILL during speech; a new server on the same port loads while the user keeps talking:
    the audio the dead server never finalized is replayed and the whole sentence arrives."""
    port = str(free_port())
    audio, _ = conversation([speech_wavs[1]])  # the longest sentence, ~5 s
    restart = ExitStack()
    tasks: list[asyncio.Task] = []
    with ExitStack() as first:
        old = first.enter_context(running_server(asr_model_path, tmp_path, "--port", port))

        def kill_mid_turn(seconds_sent: float) -> None:
            if seconds_sent >= 2.0 and not tasks:
                old.process.kill()
                (tmp_path / "new").mkdir()
                new = running_server(asr_model_path, tmp_path / "new", "--port", port)
                tasks.append(asyncio.create_task(asyncio.to_thread(restart.enter_context, new)))

        stt = service(old.url, token=None, reconnect_backoff_min_wait=0.5,
                      reconnect_backoff_max_wait=1.0, reconnect_attempts=60)  # fmt: skip
        try:
            down, up = await run_stt(
                stt,
                lambda tap: chain(paced(audio, kill_mid_turn), wait_for(lambda: tap.finals, 60)),
            )
        finally:
            await asyncio.gather(*tasks)
            restart.close()
    assert [frame.text for frame in of_type(down, TranscriptionFrame)] == [SENTENCES[1]]
    assert of_type(up, ErrorFrame), "the lost connection was not reported"


async def test_unreachable_server_is_an_error_frame():
    stt = service(f"ws://127.0.0.1:{free_port()}", reconnect_attempts=1)
    _, up = await run_stt(stt, lambda tap: paced(b"\0" * 6400))
    errors = [frame.error for frame in of_type(up, ErrorFrame)]
    assert any("cannot connect to the ASR server" in error for error in errors), errors


async def test_wrong_token_is_refused_for_good(server):
    stt = service(server.url, token="wrong")
    _, up = await run_stt(stt, lambda tap: paced(b"\0" * 6400))
    errors = [frame.error for frame in of_type(up, ErrorFrame)]
    assert any("HTTP 401" in error and "wrong token" in error for error in errors), errors
    assert not stt.is_usable


def test_replay_log_keeps_what_the_server_has_not_finalized():
    log = _ReplayLog(max_bytes=8)
    log.add(b"ab")
    log.add(b"cd")
    log.add(Finalize())
    log.add(b"ef")
    assert list(log.messages(3)) == [b"abc", b"d", Finalize(), b"ef"]
    log.confirm_final()  # the first utterance is final: only what follows its reset is left
    assert list(log.messages(3)) == [b"ef"]
    log.add(b"0123456789")  # over the bound: the oldest audio goes first
    assert list(log.messages(100)) == [b"23456789"]
    log.confirm_final()  # a final nobody asked for (server shutdown) clears everything
    assert list(log.messages(100)) == []


def test_websocket_service_imports_without_torch():
    code = (
        "import sys, nemotron_speech; assert 'pipecat' not in sys.modules; "
        "from nemotron_speech import NemotronSTTService; "
        "assert 'torch' not in sys.modules and 'nemo' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_finalize_goes_to_old_servers_as_the_seeds_reset():
    """A protocol version 1 server knows no `finalize`: it gets a reset instead."""
    wire = NemotronSTTService._wire
    assert wire(Finalize(), Ready(protocol_version=2)) == encode(Finalize())
    assert wire(Finalize(), Ready(protocol_version=1)) == encode(Reset())
    assert wire(Reset(), Ready(protocol_version=1)) == encode(Reset())
    assert wire(b"pcm", None) == b"pcm"


def test_connection_arguments_as_pipecat_services_take_them(server):
    assert NemotronSTTService(url="ws://gpu:8080")._settings.url == "ws://gpu:8080"
    assert NemotronSTTService()._settings.url == "ws://localhost:8080"
    settings = NemotronSTTService.Settings(url="ws://other:8080")
    assert NemotronSTTService(url="ws://gpu:8080", settings=settings)._settings.url == (
        "ws://other:8080"
    )
    with pytest.raises(TypeError, match="unexpected keyword argument.*: ur1"):
        NemotronSTTService(ur1="ws://gpu:8080")
    NemotronSTTService(url=server.url, reconnect_on_error=False, name="stt")  # pipecat's own


async def test_url_argument_is_where_the_service_connects(server, speech_wavs):
    """`url=` is used, not just stored (it used to be dropped, and localhost was dialled)."""
    audio, _ = conversation([speech_wavs[11]])
    stt = NemotronSTTService(url=server.url, auth_token=TOKEN)
    down, _ = await run_stt(
        stt, lambda tap: chain(paced(audio), wait_for(lambda: len(tap.finals) == 1, 10))
    )
    assert [frame.text for frame in of_type(down, TranscriptionFrame)] == [SENTENCES[11]]


def at_rate(pcm: bytes, rate: int) -> Iterator[InputAudioRawFrame]:
    """16 kHz PCM16 resampled to `rate`, in 20 ms frames, as fast as the pipeline takes them."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    resampled = (soxr.resample(samples, 16000, rate) * 32768).clip(-32768, 32767).astype("<i2")
    data, frame = resampled.tobytes(), 2 * rate // 50
    for offset in range(0, len(data), frame):
        yield InputAudioRawFrame(data[offset : offset + frame], rate, 1)


async def test_other_rates_are_resampled_and_a_finalize_on_silence_pushes_nothing(
    server, speech_wavs
):
    """A 48 kHz pipeline (no VAD, whose model takes 8 or 16 kHz: the turns are marked by hand):
    a false start, then a sentence. The false start's finalize answers "" and pushes no frame."""
    stt = service(server.url)
    tap = FinalsTap()

    def turn(pcm: bytes) -> Iterator[Frame]:
        yield VADUserStartedSpeakingFrame()
        yield from at_rate(pcm, 48000)
        yield VADUserStoppedSpeakingFrame(stop_secs=0.2)

    frames = chain(
        turn(silence(1.0)),
        turn(pcm16(speech_wavs[11]) + silence(0.3)),
        wait_for(lambda: tap.finals, 10),
    )
    down, up = await run_test(
        Pipeline([stt, tap]),
        frames_to_send=frames,
        pipeline_params=PipelineParams(audio_in_sample_rate=48000),
    )
    assert [frame.text for frame in of_type(down, TranscriptionFrame)] == [SENTENCES[11]]
    assert not of_type(up, ErrorFrame)


async def test_a_new_url_mid_sentence_moves_after_the_turn(server, speech_wavs):
    """pipecat defers the move until the user's turn ends (`UserStoppedSpeakingFrame`, from the
    user aggregator in a real pipeline): the sentence in progress ends on the old connection,
    and the next one is served on the new."""
    stt = service(server.url)
    connections = []

    @stt.event_handler("on_connected")
    async def on_connected(service):
        connections.append(service._settings.url)

    other = server.url.replace("127.0.0.1", "localhost")
    audio, _ = conversation([speech_wavs[11]])
    middle = len(audio) // 4 * 2  # inside the sentence (0.5 s of silence leads it)
    second, _ = conversation([speech_wavs[2]])
    down, _ = await run_stt(
        stt,
        lambda tap: chain(
            paced(audio[:middle]),
            [STTUpdateSettingsFrame(delta=NemotronSTTService.Settings(url=other))],
            paced(audio[middle:]),
            wait_for(lambda: tap.finals, 10),
            [UserStoppedSpeakingFrame()],
            paced(second),
            wait_for(lambda: len(tap.finals) == 2, 10),
        ),
    )
    assert [frame.text for frame in of_type(down, TranscriptionFrame)] == [
        SENTENCES[11],
        SENTENCES[2],
    ]
    assert connections == [server.url, other]


async def test_server_error_messages_are_error_frames(asr_model_path):
    """The server's `error` (here: the idle timeout of a server with a 0.3 s one, as the
    pipeline sends no audio) is an ErrorFrame upstream, and the service reconnects."""
    async with served(asr_model_path, idle_timeout=0.3) as server:
        stt = service(url(server), token=None)
        _, up = await run_stt(stt, lambda tap: [SleepFrame(sleep=1.0)])
    errors = [frame.error for frame in of_type(up, ErrorFrame)]
    assert any("ASR server error: no message for 0.3 s" in error for error in errors), errors


@pytest.mark.parametrize(("reset_after_secs", "controls"), [
    (1.0, [(1.0, "Finalize"), (2.0, "Reset")]),
    (None, [(1.0, "Finalize")]),
])  # fmt: skip
async def test_a_reset_follows_reset_after_secs_of_audio_after_the_vad_stop(
    server, reset_after_secs, controls
):
    """A VAD stop sends a finalize; `reset_after_secs` of audio after it (counted in audio, not
    time: here it arrives unpaced) sends one reset, and `None` never does. Speech before the stop
    does not count, and 3 s of silence after it give no second reset."""
    stt = service(server.url, reset_after_secs=reset_after_secs)
    sent: list[tuple[float, str]] = []  # (seconds of audio sent before it, control message)
    audio_secs = 0.0
    send = stt._send

    async def recording(message) -> None:
        nonlocal audio_secs
        if isinstance(message, bytes):
            audio_secs += len(message) / 32000
        else:
            sent.append((round(audio_secs, 3), type(message).__name__))
        await send(message)

    stt._send = recording
    frames = chain(
        [VADUserStartedSpeakingFrame()],
        at_rate(silence(1.0), 16000),
        [VADUserStoppedSpeakingFrame(stop_secs=0.2)],
        at_rate(silence(3.0), 16000),
        wait_for(lambda: audio_secs >= 4.0, 10),
    )
    _, up = await run_test(Pipeline([stt]), frames_to_send=frames)
    assert sent == controls
    assert not of_type(up, ErrorFrame)
