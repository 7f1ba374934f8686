"""`AsrClient` and the example client against a real server on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from server_fixtures import TOKEN, events_until_final, frames, pcm16, running_server

from nemotron_speech.client import AsrClient, AsrConnectionError
from nemotron_speech.protocol import Ready, Transcript
from nemotron_speech.testing.sentences import SENTENCES

EXAMPLE = Path(__file__).parents[1] / "examples" / "asr_client.py"


@pytest.fixture(scope="module")
def server(asr_model_path, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("client-server")
    options = ["--auth-token", TOKEN, "--batch-wait-ms", "5"]  # also covers the batching window
    with running_server(asr_model_path, log_dir, *options) as server:
        yield server


async def test_connect_waits_for_ready(server):
    async with await AsrClient.connect(server.url, token=TOKEN) as client:
        assert client.ready == Ready(chunk_ms=160.0, right_context=1)
    assert client.close_code == 1000


async def test_typed_events_soft_and_hard_finalize(server, speech_wavs):
    audio = pcm16(speech_wavs[11])
    async with await AsrClient.connect(server.url, token=TOKEN) as client:
        for frame in frames(audio):
            await client.send_audio(frame)
        await client.flush()
        await client.end()
        events = await events_until_final(client)
    assert all(isinstance(event, Transcript) for event in events)
    *interims, soft, final = events
    assert [e.is_final for e in interims] == [False] * len(interims) and interims
    assert soft == Transcript(SENTENCES[11][: len(soft.text)], is_final=True, finalize=False)
    assert final == Transcript(SENTENCES[11], is_final=True, finalize=True)


async def test_iteration_ends_when_the_server_closes(server):
    client = await AsrClient.connect(server.url, token=TOKEN)
    await client.send_audio(bytes(2**20 + 2))  # over the server's frame limit: it closes
    assert [event async for event in client] == []
    assert client.close_code == 1009
    with pytest.raises(AsrConnectionError, match="server closed the connection: 1009"):
        await client.end()


async def test_connection_errors_say_why(server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    with pytest.raises(AsrConnectionError, match=f"cannot connect to ws://127.0.0.1:{free_port}"):
        await AsrClient.connect(f"ws://127.0.0.1:{free_port}")
    with pytest.raises(AsrConnectionError, match="HTTP 401 wrong token") as error:
        await AsrClient.connect(server.url, token="nope")
    assert error.value.code == 401


def test_example_client_prints_final_and_latencies(server, speech_wavs):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(speech_wavs[12]), "--url", server.url,
         "--token", TOKEN, "--chunk-ms", "40", "--realtime"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert f"final: {SENTENCES[12]}" in lines
    assert any(line.startswith("  interim: ") for line in lines)
    assert any(line.startswith("interims: ") for line in lines)
    assert any(line.startswith("audio: 4.25 s, RTF 1.") for line in lines)
    assert any(line.startswith("finalization: last audio -> final ") for line in lines)


def test_example_client_rejects_wrong_audio_format(tmp_path):
    import wave

    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(44100)
        wav.writeframes(bytes(400))
    result = subprocess.run([sys.executable, str(EXAMPLE), str(path)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "44100 Hz, 2 channel(s), 16-bit; the server needs 16000 Hz mono 16-bit" in result.stderr
