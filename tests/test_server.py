"""The ASR server on loopback with the generated model: the seed's session, flush vs reset,
concurrency equal to solo runs, bad input, limits, metrics and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import websockets
from server_fixtures import (
    TOKEN,
    events_until_final,
    flushed,
    frames,
    pcm16,
    running_server,
    transcribe,
)

from nemotron_speech.client import AsrClient, AsrConnectionError
from nemotron_speech.protocol import BYTES_PER_MS, CloseCode, Error, Transcript
from nemotron_speech.server.metrics import LAG_PARTS, SCHEDULER_ACTIVITIES
from nemotron_speech.server.scheduler import IDLE_SPELL_S
from nemotron_speech.testing.sentences import SENTENCES

MAX_STREAMS = 20
MAX_MESSAGE_BYTES = 65536
BATCH_OF_ONE = 'asr_step_batch_size_bucket{le="1.0"}'
COUNTED = (
    "asr_connections_total",
    "asr_audio_seconds_total",
    'asr_transcripts_total{kind="interim"}',
    'asr_transcripts_total{kind="flush"}',
    'asr_transcripts_total{kind="final"}',
    "asr_finalize_seconds_count",
    "asr_steps_total",
    "asr_step_batch_size_sum",
)
SCHEDULER = {a: f'asr_scheduler_seconds_total{{activity="{a}"}}' for a in SCHEDULER_ACTIVITIES}
# Far shorter than the engine needs for the 8 s bound, so a stream held there is closed; the
# other tests here send at most ~6 s per stream and are never held.
BACKPRESSURE_TIMEOUT = 0.02
BINARY = re.compile(r"<binary (\d+) bytes>(?:\s+x(\d+))?")  # the recorded session's frames


@pytest.fixture(scope="module")
def server(asr_model_path, tmp_path_factory):
    options = [
        "--auth-token", TOKEN, "--max-streams", str(MAX_STREAMS),
        "--max-message-bytes", str(MAX_MESSAGE_BYTES), "--max-buffered-seconds", "8",
        "--backpressure-timeout", str(BACKPRESSURE_TIMEOUT),
    ]  # fmt: skip
    with running_server(asr_model_path, tmp_path_factory.mktemp("server"), *options) as server:
        yield server


@pytest.fixture(scope="module")
def audio(speech_wavs) -> list[bytes]:
    return [pcm16(path) for path in speech_wavs]


def headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


async def test_health_and_startup_log(server):
    status, body = server.http("/health")
    assert status == 200 and json.loads(body)["status"] == "ready"
    log = server.log()
    assert "device=cpu precision=fp32 cuda_graphs=False right_context=1 (chunk 160 ms" in log
    assert "memory=rss" in log


async def test_seed_style_session(server, audio):
    """ready -> interims (each a new text, never final) -> final on end, with raw websockets."""
    async with websockets.connect(server.url, additional_headers=headers()) as ws:
        assert json.loads(await ws.recv()) == {
            "type": "ready", "protocol_version": 3, "sample_rate": 16000, "chunk_ms": 160.0,
            "right_context": 1,
        }  # fmt: skip
        for frame in frames(audio[0], 16000):  # the seed's client sent 500 ms frames
            await ws.send(frame)
        await ws.send(json.dumps({"type": "end"}))
        messages = []
        while not messages or not messages[-1]["is_final"]:
            messages.append(json.loads(await ws.recv()))
    *partials, final = messages
    assert final == {"type": "transcript", "text": SENTENCES[0], "is_final": True,
                     "finalize": True}  # fmt: skip
    assert partials and all(m["type"] == "transcript" and not m["is_final"] for m in partials)
    texts = [m["text"] for m in partials]
    assert all(a != b for a, b in zip(texts, texts[1:], strict=False)), "repeated interim"
    assert all(text for text in texts), "interim for silence"


async def test_the_protocol_docs_recorded_session_replays(server, audio):
    """docs/protocol.md's recorded session, replayed: its client lines drive the client (the
    frames of speech 11 at real time, each line sent once the server lines above it came) and
    the server says exactly its server lines."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    block = doc.split("Recorded on", 1)[1].split("```", 2)[1]
    lines = [line.split(maxsplit=1) for line in block.strip().splitlines()]
    expected = [json.loads(text) for side, text in lines if side == "S"]
    received: list[dict] = []
    async with websockets.connect(server.url, additional_headers=headers()) as ws:

        async def receive(count: int) -> None:
            while len(received) < count:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))

        rest, due = audio[11], 0
        for side, text in lines:
            if side == "S":
                due += 1
                continue
            await receive(due)
            sizes = [(int(n), int(times or 1)) for n, times in BINARY.findall(text)]
            for size, times in sizes:
                for _ in range(times):
                    await asyncio.sleep(size / 32000)  # real time
                    frame, rest = rest[:size], rest[size:]
                    await ws.send(frame)
            if not sizes:
                await ws.send(text.split("  ")[0])
        await receive(due)
        assert not rest, "the session's frames are the whole file"
    assert received == expected


async def test_flush_keeps_state(server, audio):
    half = len(audio[1]) // 2 // 2 * 2
    async with AsrClient.connect(server.url, token=TOKEN) as client:
        for frame in frames(audio[1][:half]):
            await client.send_audio(frame)
        await client.flush()
        flushed = await _next_final(client)
        assert not flushed.finalize and flushed.text and SENTENCES[1].startswith(flushed.text)
        for frame in frames(audio[1][half:]):
            await client.send_audio(frame)
        await client.end()
        events = await events_until_final(client)
    assert events[-1] == Transcript(SENTENCES[1], is_final=True, finalize=True)


async def test_reset_then_next_utterance_on_same_stream(server, audio):
    """The next utterance's audio may follow the reset at once; its final holds only itself."""
    async with AsrClient.connect(server.url, token=TOKEN) as client:
        await send(client, audio[2])
        await client.reset()
        await send(client, audio[3])  # arrives while the first utterance is finalizing
        await client.end()
        first = await events_until_final(client)
        second = await events_until_final(client)
        await send(client, audio[4])  # still usable after end
        await client.end()
        third = await events_until_final(client)
    assert first[-1].text == SENTENCES[2]
    assert second[-1].text == SENTENCES[3]
    assert third[-1].text == SENTENCES[4]


async def test_interims_say_how_much_audio_their_text_needed(server, audio):
    """`audio_ms` is the point in the connection's audio (from its first byte, over every
    utterance) at which the text's chunk was ready: chunk boundaries, 160 ms apart from each
    utterance's start, past the one before, and never past what the client had sent when the
    interim came (a client times its lag from the send of that audio)."""
    sent, needed = [0], [[], []]  # per utterance
    async with AsrClient.connect(server.url, token=TOKEN) as client:
        chunk_ms = client.ready.chunk_ms

        async def receive() -> None:
            for utterance in needed:
                for event in await events_until_final(client):
                    if not event.is_final and event.audio_ms is not None:
                        utterance.append(event.audio_ms)
                        assert event.audio_ms * BYTES_PER_MS <= sent[0]

        receiver = asyncio.create_task(receive())
        for sentence in audio[2], audio[3]:
            for frame in frames(sentence):
                await asyncio.sleep(len(frame) / 32000)  # real time: texts come from chunks
                sent[0] += len(frame)  # before the send, which may let the receiver run
                await client.send_audio(frame)
            await client.end()
        await receiver
    first, second = needed
    assert first and second and first + second == sorted(set(first + second))
    origin = len(audio[2]) / BYTES_PER_MS  # the second utterance starts after the first's audio
    phase = first[0] % chunk_ms  # where the first chunk ends: boundaries are 160 ms on from it
    assert [ms % chunk_ms for ms in first] == [phase] * len(first)
    assert [(ms - origin) % chunk_ms for ms in second] == [phase] * len(second)


async def test_sixteen_concurrent_clients_match_solo_runs(server, audio):
    solo = [await transcribe(server.url, a) for a in audio]
    single, steps = server.metric(BATCH_OF_ONE), server.metric("asr_step_batch_size_count")
    together = await asyncio.gather(*(transcribe(server.url, a) for a in audio))
    for index, (alone, batched) in enumerate(zip(solo, together, strict=True)):
        assert batched[-1] == Transcript(SENTENCES[index], is_final=True, finalize=True)
        # an interim has `audio_ms` unless its chunk ran after `end`, which timing decides
        assert [replace(e, audio_ms=None) for e in batched] == [
            replace(e, audio_ms=None) for e in alone
        ]
        both = [(a.audio_ms, b.audio_ms) for a, b in zip(alone, batched, strict=True)]
        assert all(a == b for a, b in both if a is not None and b is not None)
    batched_steps = server.metric("asr_step_batch_size_count") - steps
    assert server.metric(BATCH_OF_ONE) - single < batched_steps, "no step batched two streams"


async def test_odd_byte_frames_are_carried(server, audio):
    odd = frames(audio[5], 3201)  # every frame but the last has an odd length
    events = await transcribe(server.url, b"".join(odd), size=3201)
    assert events[-1].text == SENTENCES[5]


async def test_malformed_messages_get_clear_errors_and_stream_survives(server, audio):
    bad = {
        "not json": "text frames must be JSON messages (Expecting value: line 1 column 1 "
        "(char 0)); send audio as binary frames",
        "[1, 2]": 'a message must be a JSON object with a "type" field, got list',
        "{}": 'message has no "type" field; expected one of finalize, reset, end',
        '{"type": "flush"}': 'unknown message type "flush"; expected one of finalize, reset, end',
        '{"type": "reset", "finalize": "yes"}': '"finalize" must be true or false, got "yes"',
        "": "text frames must be JSON messages (Expecting value: line 1 column 1 (char 0)); "
        "send audio as binary frames",
    }
    errors_before = server.metric('asr_client_errors_total{cause="bad_message"}')
    async with AsrClient.connect(server.url, token=TOKEN) as client:
        for text in bad:
            await client._websocket.send(text)
        replies = [await client.recv() for _ in bad]
        assert replies == [Error(message) for message in bad.values()]
        await send(client, audio[6])
        await client.end()
        events = await events_until_final(client)
    assert events[-1].text == SENTENCES[6]
    assert server.metric('asr_client_errors_total{cause="bad_message"}') == errors_before + 6


async def test_frame_over_size_limit_closes_with_1009(server):
    too_big = server.metric('asr_client_errors_total{cause="too_big"}')
    client = await AsrClient.connect(server.url, token=TOKEN)
    await client.send_audio(bytes(MAX_MESSAGE_BYTES + 2))
    with pytest.raises(AsrConnectionError) as error:
        await client.recv()
    assert error.value.code == CloseCode.MESSAGE_TOO_BIG
    assert error.value.reason.endswith(f"exceeds limit of {MAX_MESSAGE_BYTES} bytes")
    server.wait_for_metric("asr_streams_open", 0)
    assert server.metric('asr_client_errors_total{cause="too_big"}') == too_big + 1


async def test_stream_held_at_its_bound_too_long_is_closed(server):
    """60 s of audio at loopback speed, then nothing: the server stops reading at the 8 s bound,
    and the stream stays there longer than the backpressure timeout, so it is closed with 1008
    after an error that says why, and freed. (tests/test_client.py: the default timeout lets an
    unpaced 5-minute file through.)"""
    buffer_full = server.metric('asr_client_errors_total{cause="buffer_full"}')
    client = await AsrClient.connect(server.url, token=TOKEN)
    with contextlib.suppress(AsrConnectionError):  # sending may or may not see the close
        for frame in frames(bytes(60 * 32000), MAX_MESSAGE_BYTES):
            await client.send_audio(frame)
    events = [event async for event in client]
    assert events == [Error(
        f"audio buffer full: the stream's audio stayed at its 8 s bound for "
        f"{BACKPRESSURE_TIMEOUT:g} s (the server cannot keep up with it); send at real time or "
        "retry later"
    )]  # fmt: skip
    assert (client.close_code, client.close_reason) == (1008, "audio buffer full")
    server.wait_for_metric("asr_streams_open", 0)
    assert server.metric('asr_client_errors_total{cause="buffer_full"}') == buffer_full + 1


async def test_vanished_client_frees_its_stream(server, audio):
    client = await AsrClient.connect(server.url, token=TOKEN)
    await send(client, audio[7][: len(audio[7]) // 2])
    server.wait_for_metric("asr_streams_open", 1)
    client._websocket.transport.abort()  # no close frame: the client just disappears
    await asyncio.sleep(0.01)  # let the loop drop the socket before the blocking metric polls
    server.wait_for_metric("asr_streams_open", 0)


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_missing_or_wrong_token_is_refused_before_audio(server, token):
    before = server.metric('asr_connections_rejected_total{reason="auth"}')
    with pytest.raises(AsrConnectionError) as error:
        await AsrClient.connect(server.url, token=token)
    assert error.value.code == 401
    what = "wrong" if token else "missing"
    assert error.value.reason == f"{what} token: send the header 'Authorization: Bearer <token>'"
    assert server.metric('asr_connections_rejected_total{reason="auth"}') == before + 1


async def test_connections_over_max_streams_are_closed_with_1013(server, audio):
    refused = server.metric('asr_connections_rejected_total{reason="max_streams"}')
    clients = [await AsrClient.connect(server.url, token=TOKEN) for _ in range(MAX_STREAMS)]
    with pytest.raises(AsrConnectionError) as error:
        await AsrClient.connect(server.url, token=TOKEN)
    assert error.value.code == CloseCode.TRY_AGAIN_LATER
    assert error.value.reason == f"server is at its limit of {MAX_STREAMS} streams"
    assert server.metric('asr_connections_rejected_total{reason="max_streams"}') == refused + 1
    await clients.pop().close()
    server.wait_for_metric("asr_streams_open", MAX_STREAMS - 1)
    events = await transcribe(server.url, audio[8])  # a freed place is usable again
    assert events[-1].text == SENTENCES[8]
    await asyncio.gather(*(client.close() for client in clients))
    server.wait_for_metric("asr_streams_open", 0)


async def test_metrics_account_for_one_stream(server, audio):
    """One stream's connection, audio, interims, flush, final and steps, as deltas (the other
    tests share the server)."""
    status, text = server.http("/metrics")
    assert status == 200 and "# TYPE asr_step_seconds histogram" in text
    server.wait_for_metric("asr_streams_open", 0)
    lags = ("asr_interim_lag_seconds_count", "asr_interim_lag_seconds_sum")
    parts = {
        part: tuple(f'asr_interim_lag_parts_seconds_{k}{{part="{part}"}}' for k in ("count", "sum"))
        for part in LAG_PARTS
    }
    split_names = [name for names in parts.values() for name in names]
    names = (*COUNTED, "asr_step_seconds_sum", *SCHEDULER.values(), *lags, *split_names)
    before = {name: server.metric(name) for name in names}
    started = time.perf_counter()
    async with AsrClient.connect(server.url, token=TOKEN) as client:
        await send(client, audio[12])
        await client.flush()
        await client.end()
        events = await events_until_final(client)
    server.wait_for_metric("asr_streams_open", 0)
    wall = time.perf_counter() - started
    delta = {name: server.metric(name) - value for name, value in before.items()}
    # the scheduler's time: each second counted once (give or take the idle spell under way at
    # each end); its step time wraps the engine's steps; its command time holds the feeds
    busy = {activity: delta.pop(name) for activity, name in SCHEDULER.items()}
    assert abs(sum(busy.values()) - wall) < IDLE_SPELL_S + 0.5, busy
    assert delta.pop("asr_step_seconds_sum") <= busy["step"] <= wall
    assert 0 < busy["commands"] < wall
    # every interim of a streamed chunk timed from its audio's arrival (a finalize's are not)
    timed, lag = (delta.pop(name) for name in lags)
    interims = sum(not event.is_final for event in events)
    assert 0 < timed <= interims and 0 < lag < timed * wall
    # ... and in parts that add up to it: to the scheduler, in it, back
    split = {part: [delta.pop(name) for name in names] for part, names in parts.items()}
    assert all(count == timed and total >= 0 for count, total in split.values()), split
    assert sum(total for _, total in split.values()) == pytest.approx(lag, abs=1e-6)
    assert split["in_scheduler"][1] > 0
    steps = delta["asr_steps_total"]
    assert interims > 0 and steps > 0
    assert delta == pytest.approx({
        "asr_connections_total": 1,
        "asr_audio_seconds_total": len(audio[12]) / 32000,
        'asr_transcripts_total{kind="interim"}': interims,
        'asr_transcripts_total{kind="flush"}': 1,
        'asr_transcripts_total{kind="final"}': 1,
        "asr_finalize_seconds_count": 1,
        "asr_steps_total": steps,
        "asr_step_batch_size_sum": steps,  # alone: one stream in every step
    })  # fmt: skip


async def send(client: AsrClient, audio: bytes) -> None:
    for frame in frames(audio):
        await client.send_audio(frame)


async def _next_final(client: AsrClient) -> Transcript:
    while True:
        event = await client.recv()
        if isinstance(event, Transcript) and event.is_final:
            return event


async def test_loading_then_sigterm_finalizes_open_streams(asr_model_path, tmp_path, audio):
    """While loading: /health 503 and streams refused with 1013. Shutdown sends each open
    stream the final of the audio it has, then closes with 1001."""
    with running_server(asr_model_path, tmp_path, wait_ready=False) as server:
        status, body = server.http("/health")
        assert (status, json.loads(body)) == (503, {"status": "loading", "streams": 0})
        with pytest.raises(AsrConnectionError) as error:
            await AsrClient.connect(server.url)
        assert error.value.code == CloseCode.TRY_AGAIN_LATER
        assert error.value.reason == "server is loading the model; retry when /health says ready"
        server.wait_ready()
        assert server.metric('asr_connections_rejected_total{reason="loading"}') == 1
        clients = [await AsrClient.connect(server.url) for _ in range(2)]
        for client, index in zip(clients, (9, 10), strict=True):
            await send(client, audio[index])
            await flushed(client)
        server.wait_for_metric("asr_audio_seconds_total", (len(audio[9]) + len(audio[10])) / 32000)
        server.process.send_signal(signal.SIGTERM)
        for client, index in zip(clients, (9, 10), strict=True):
            events = [event async for event in client]
            assert events[-1] == Transcript(SENTENCES[index], is_final=True, finalize=True)
            assert (client.close_code, client.close_reason) == (1001, "server shutting down")
        assert server.process.wait(30) == 0
        assert "shutting down: finalizing 2 open streams" in server.log()


def test_command_line_says_what_is_missing(tmp_path):
    """Both entry points share one parser; a missing model, given or at the default place (where
    `nemotron-speech download asr` puts it), is one line naming the path and the fix."""
    env = {**os.environ, "NEMOTRON_MODELS_DIR": str(tmp_path)}
    default = tmp_path / "asr" / "nemotron-speech-streaming-en-0.6b.nemo"
    for command in (
        [sys.executable, "-m", "nemotron_speech.server"],
        [sys.executable, "-m", "nemotron_speech.cli", "serve-asr"],
    ):
        for options, path in ((["--model", "/no/such.nemo"], "/no/such.nemo"), ([], default)):
            result = subprocess.run([*command, *options], capture_output=True, text=True,
                                    env=env, timeout=60)  # fmt: skip
            assert result.returncode == 2
            assert result.stderr.strip().endswith(
                f"asr weights not found at {path}; fetch them with `nemotron-speech download "
                "asr`, or pass --model with a cache-aware streaming .nemo file"
            ), result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
