"""`AsrClient` and the example client against a real server on loopback, started as the seed's
users start it.

The example runs as `uv run asr_client.py` from an empty folder (`standalone.run_example`): an
environment built from its inline metadata, without this package.
"""

from __future__ import annotations

import asyncio
import re
import wave

import pytest
from server_fixtures import TOKEN, events_until_final, frames, pcm16, running_server
from standalone import run_example

from nemotron_speech.client import AsrClient, AsrConnectionError
from nemotron_speech.download import asr_path
from nemotron_speech.llm.launcher import free_port
from nemotron_speech.protocol import Ready, Transcript
from nemotron_speech.testing.sentences import SENTENCES

SILENCE = bytes(32000)  # 1 s


@pytest.fixture(scope="module")
def server(asr_model_path, tmp_path_factory):
    """No --model (the model lies where `nemotron-speech download asr` puts it) and no
    --right-context (the seed's 1), as in the seed's `python -m nemotron_speech.server`."""
    models = tmp_path_factory.mktemp("models")
    asr_path(models).parent.mkdir()
    asr_path(models).symlink_to(asr_model_path)
    options = ["--auth-token", TOKEN, "--batch-wait-ms", "5"]  # also covers the batching window
    env = {"NEMOTRON_MODELS_DIR": str(models)}
    with running_server(None, models, *options, extra_env=env) as server:
        yield server


def test_server_found_the_downloaded_model(server):
    assert f"ready: model={asr_path(server.log_path.parent)} device=cpu" in server.log()


def speech(speech_wavs, seconds: float) -> list[tuple[int, bytes]]:
    """The test sentences over and over, each with 1 s of silence after it, until `seconds`:
    (sentence index, audio) pairs."""
    segments, total = [], 0
    while total < seconds * 32000:
        index = len(segments) % len(speech_wavs)
        segments.append((index, pcm16(speech_wavs[index]) + SILENCE))
        total += len(segments[-1][1])
    return segments


async def test_connect_waits_for_ready(server):
    async with AsrClient.connect(server.url, token=TOKEN) as client:
        assert client.ready == Ready(chunk_ms=160.0, right_context=1)
    assert client.close_code == 1000


async def test_typed_events_flush_and_final(server, speech_wavs):
    audio = pcm16(speech_wavs[11])
    async with AsrClient.connect(server.url, token=TOKEN) as client:
        for frame in frames(audio):
            await client.send_audio(frame)
        await client.flush()
        await client.end()
        events = await events_until_final(client)
    assert all(isinstance(event, Transcript) for event in events)
    *interims, flushed, final = events
    assert [e.is_final for e in interims] == [False] * len(interims) and interims
    assert flushed == Transcript(SENTENCES[11][: len(flushed.text)], is_final=True, finalize=False)
    assert final == Transcript(SENTENCES[11], is_final=True, finalize=True)


async def test_iteration_ends_when_the_server_closes(server):
    client = await AsrClient.connect(server.url, token=TOKEN)
    await client.send_audio(bytes(2**20 + 2))  # over the server's frame limit: it closes
    assert [event async for event in client] == []
    assert client.close_code == 1009
    with pytest.raises(AsrConnectionError, match="server closed the connection: 1009"):
        await client.end()


async def test_connection_errors_say_why(server):
    port = free_port()
    with pytest.raises(
        AsrConnectionError, match=f"cannot connect to the ASR server at ws://127.0.0.1:{port}"
    ):
        await AsrClient.connect(f"ws://127.0.0.1:{port}")
    with pytest.raises(AsrConnectionError, match="HTTP 401 wrong token") as error:
        await AsrClient.connect(server.url, token="nope")
    assert error.value.code == 401


def test_example_client_prints_final_and_latencies(server, speech_wavs, tmp_path):
    result = run_example(
        "asr_client.py", str(speech_wavs[12]), "--url", server.url, "--token", TOKEN,
        "--chunk-ms", "40", "--realtime", folder=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"final: {SENTENCES[12]}" in lines
    interims = [line for line in lines if line.startswith("  interim: ")]
    # each with its lag, but for any of chunks run after `end` (the server sends no audio_ms)
    assert any(re.fullmatch(r"  interim: .+ \(\d+ ms\)", line) for line in interims)
    assert any(line.startswith("interims: ") for line in lines)
    assert any(line.startswith("audio: 4.25 s, RTF 1.") for line in lines)
    assert any(line.startswith("finalization: last audio -> final ") for line in lines)


def test_example_client_sends_a_file_unpaced(server, speech_wavs, tmp_path):
    result = run_example(
        "asr_client.py", str(speech_wavs[3]), "--url", server.url, "--token", TOKEN,
        folder=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"final: {SENTENCES[3]}" in result.stdout.splitlines()


def test_example_client_sends_five_minutes_unpaced(server, speech_wavs, tmp_path):
    """The seed's "transcribe a file": 5 minutes sent as fast as possible is slowed down by TCP
    backpressure (the server stops reading at its 30 s bound) instead of being cut off, and all
    of it goes through the engine. One stream of the generated model says only its first
    sentence (the model recognises nothing after a finished sentence in one stream); the next
    test checks every sentence."""
    audio = b"".join(pcm for _, pcm in speech(speech_wavs, 300))
    wav = write_wav(tmp_path / "five-minutes.wav", 1, 16000, audio)
    before = server.metric("asr_audio_seconds_total")
    result = run_example(
        "asr_client.py", wav, "--url", server.url, "--token", TOKEN, folder=tmp_path
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"final: {SENTENCES[0]}" in result.stdout.splitlines()
    processed = server.metric("asr_audio_seconds_total") - before
    assert processed == pytest.approx(len(audio) / 32000) and processed > 300


async def test_unpaced_utterances_all_come_back_whole(server, speech_wavs):
    """Every sentence, unpaced, with a reset after each (not waiting for its final): 2.5 times
    the bound, so the sender is held by backpressure while audio waits behind the resets; every
    final is its sentence, in order."""
    segments = speech(speech_wavs, 75)
    async with AsrClient.connect(server.url, token=TOKEN) as client:

        async def finals() -> list[str]:
            texts = []
            while len(texts) < len(segments):
                event = await client.recv()
                if isinstance(event, Transcript) and event.finalize:
                    texts.append(event.text)
            return texts

        collector = asyncio.create_task(finals())
        for _, pcm in segments:
            for frame in frames(pcm):
                await client.send_audio(frame)
            await client.reset()
        texts = await asyncio.wait_for(collector, 120)
    assert texts == [SENTENCES[index] for index, _ in segments]


def write_wav(path, channels: int, rate: int, pcm: bytes | None = None) -> str:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(3200 * channels) if pcm is None else pcm)
    return str(path)


def test_example_client_errors_are_one_line(server, tmp_path):
    """Wrong audio format, no file, no server, wrong token, a stream the server closes: one
    line each that says what to do."""
    stereo = write_wav(tmp_path / "stereo.wav", 2, 44100)
    speech = write_wav(tmp_path / "speech.wav", 1, 16000)
    long = write_wav(tmp_path / "long.wav", 1, 16000, bytes(9 * 32000))
    down = f"ws://127.0.0.1:{free_port()}"
    cases = {
        (stereo,): "44100 Hz, 2 channel(s), 16-bit; the server needs 16000 Hz mono 16-bit",
        (str(tmp_path / "absent.wav"),): "absent.wav: not a readable WAV file",
        (speech, "--url", down): f"cannot connect to {down} (",
        (speech, "--url", server.url, "--token", "nope"): "HTTP 401 wrong token",
        # one 9 s frame is over the server's 256 KiB limit
        (long, "--url", server.url, "--token", TOKEN, "--chunk-ms", "9000"): ": 1009 ",
    }
    for args, expected in cases.items():
        result = run_example("asr_client.py", *args, folder=tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
