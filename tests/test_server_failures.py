"""What a failure costs, on an in-process ASR server (so a fault can be put into its engine):
an engine failure ends its own stream with 1011 and no other, audio past the engine's own bound
ends its stream with 1008, a failure sending to a client closes it with 1011, a handshake under
way when shutdown begins is refused, one completed as it begins is closed with 1013, an idle
client is closed with 4000, and a server whose own engine process (`--engine-process`) dies
closes its streams with 1011 and stops."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from server_fixtures import frames, pcm16, served, url

from nemotron_speech.client import AsrClient, AsrConnectionError, open_stream
from nemotron_speech.protocol import CloseCode, Error, Transcript
from nemotron_speech.server.app import AsrServer, Health, ServerConfig
from nemotron_speech.testing.sentences import SENTENCES

POISON = b"\x7f\x7f" * 321  # audio the patched engine fails on


async def final_text(client: AsrClient) -> str:
    async for event in client:
        if isinstance(event, Transcript) and event.finalize:
            return event.text
    raise AssertionError(f"closed without a final: {client.close_code} {client.close_reason}")


async def test_an_engine_failure_costs_its_stream_and_no_other(
    asr_model_path, speech_wavs, monkeypatch
):
    async with served(asr_model_path) as server:
        engine = server._inference.engine
        feed = engine.feed

        def failing_feed(stream_id: int, data: bytes) -> None:
            if POISON in data:
                raise RuntimeError("injected engine fault")
            feed(stream_id, data)

        monkeypatch.setattr(engine, "feed", failing_feed)
        address = url(server)
        async with AsrClient.connect(address) as victim, AsrClient.connect(address) as other:
            audio = pcm16(speech_wavs[3])
            half = len(audio) // 2 // 2 * 2
            for frame in frames(audio[:half]):
                await other.send_audio(frame)
            await victim.send_audio(POISON)
            assert [event async for event in victim] == [
                Error("internal error in the ASR engine; reconnect")
            ]
            assert (victim.close_code, victim.close_reason) == (
                CloseCode.INTERNAL_ERROR,
                "engine failure",
            )
            for frame in frames(audio[half:]):  # the other stream goes on where it was
                await other.send_audio(frame)
            await other.end()
            assert await final_text(other) == SENTENCES[3]
        async with AsrClient.connect(address) as again:  # and new streams are served
            for frame in frames(pcm16(speech_wavs[4])):
                await again.send_audio(frame)
            await again.end()
            assert await final_text(again) == SENTENCES[4]


async def test_a_failure_sending_to_a_client_closes_it_with_1011(
    asr_model_path, speech_wavs, monkeypatch, caplog
):
    """A bug in a connection's writer (here: timing an interim) must not leave the client
    waiting in silence: the connection is closed with 1011 and the error logged, and other
    connections are served."""
    from nemotron_speech.server import session

    def failing_observe(self, metrics, sent: float) -> None:
        raise RuntimeError("injected writer fault")

    async with served(asr_model_path) as server:
        with monkeypatch.context() as patch:
            patch.setattr(session._TimedInterim, "observe", failing_observe)
            async with AsrClient.connect(url(server)) as client:
                for frame in frames(pcm16(speech_wavs[5])):
                    await client.send_audio(frame)
                async with asyncio.timeout(10):
                    events = [event async for event in client]
            assert all(isinstance(event, Transcript) for event in events), events
            assert (client.close_code, client.close_reason) == (
                CloseCode.INTERNAL_ERROR,
                "internal error",
            )
            assert "sending failed; closing with 1011" in caplog.text
        async with AsrClient.connect(url(server)) as again:
            for frame in frames(pcm16(speech_wavs[6])):
                await again.send_audio(frame)
            await again.end()
            assert await final_text(again) == SENTENCES[6]


async def test_audio_past_the_engines_own_bound_ends_the_stream_with_1008(asr_model_path):
    """The engine's bound, the last line of defence behind the session's backpressure (which
    stops reading first, so only a server bug reaches it): an error naming the bound, close
    1008, counted as buffer_full. Lowered here to 0.2 s so one 1 s frame passes it."""
    async with served(asr_model_path) as server:
        server._inference.engine.max_buffered_samples = 3200
        async with AsrClient.connect(url(server)) as client:
            await client.send_audio(bytes(32000))
            events = [event async for event in client]
        assert [type(event) for event in events] == [Error], events
        assert re.fullmatch(
            r"audio buffer full: stream \d+ has 0\.0 s of audio waiting \(limit 0\.2 s\); "
            "send audio no faster than real time",
            events[0].message,
        ), events
        assert (client.close_code, client.close_reason) == (
            CloseCode.POLICY_VIOLATION,
            "audio buffer full",
        )
        assert 'asr_client_errors_total{cause="buffer_full"} 1.0' in server.metrics.render()


async def test_a_handshake_under_way_when_shutdown_begins_is_refused(asr_model_path):
    """The port stops listening at once; a connection already accepted but not yet upgraded
    gets websockets' HTTP 503, so a client retries (elsewhere) instead of waiting."""
    async with served(asr_model_path) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setblocking(False)
        await asyncio.sleep(0.2)  # the loop accepts it; its request is not sent yet
        server.stop()
        while server.health is not Health.STOPPING:
            await asyncio.sleep(0.01)
        with pytest.raises(AsrConnectionError) as error:
            await open_stream(url(server), sock=sock)
        assert (error.value.code, error.value.reason) == (503, "Server is shutting down.")
        assert not error.value.refused  # a 5xx: worth retrying, unlike a wrong token


async def test_a_connection_upgraded_as_shutdown_begins_is_closed_with_1013(
    asr_model_path, monkeypatch
):
    """The handshake completed, then shutdown began before the server gave the connection a
    stream: it is refused with 1013 (retry elsewhere), not served a stream nobody finalizes."""
    handle = AsrServer._handle

    async def shutdown_first(self: AsrServer, websocket) -> None:
        self.stop()
        while self.health is not Health.STOPPING:
            await asyncio.sleep(0.01)
        await handle(self, websocket)

    monkeypatch.setattr(AsrServer, "_handle", shutdown_first)
    async with served(asr_model_path) as server:
        with pytest.raises(AsrConnectionError) as error:
            await AsrClient.connect(url(server))
        assert (error.value.code, error.value.reason) == (
            CloseCode.TRY_AGAIN_LATER,
            "server is shutting down",
        )
        rejected = 'asr_connections_rejected_total{reason="shutting_down"} 1.0'
        assert rejected in server.metrics.render()


async def test_an_idle_client_is_closed(asr_model_path):
    async with served(asr_model_path, idle_timeout=0.5) as server:
        async with AsrClient.connect(url(server)) as client:
            events = [event async for event in client]  # send nothing
        assert events == [Error("no message for 0.5 s")]
        assert (client.close_code, client.close_reason) == (CloseCode.IDLE_TIMEOUT, "idle timeout")
        assert 'asr_client_errors_total{cause="idle_timeout"} 1.0' in server.metrics.render()


async def test_an_own_engine_process_serves_and_its_death_ends_the_server(
    asr_model_path, speech_wavs
):
    """`--engine-process` without `--workers`: the server spawns its engine process, streams are
    served through it, and if it dies every stream gets the engine-failure close and `run()`
    raises (the command exits 1)."""
    server = AsrServer(ServerConfig(model=asr_model_path, port=0, engine_process=True))
    running = asyncio.create_task(server.run())
    async with asyncio.timeout(180):
        while server.health is not Health.READY:
            if running.done():
                running.result()
            await asyncio.sleep(0.05)
    async with AsrClient.connect(url(server)) as client:
        for frame in frames(pcm16(speech_wavs[6])):
            await client.send_audio(frame)
        await client.end()
        assert await final_text(client) == SENTENCES[6]
    async with AsrClient.connect(url(server)) as client:
        await client.send_audio(pcm16(speech_wavs[7])[:16000])
        server._inference._own.process.kill()
        assert [event async for event in client] == [
            Error("internal error in the ASR engine; reconnect")
        ]
        assert (client.close_code, client.close_reason) == (1011, "engine failure")
    with pytest.raises(RuntimeError, match="the engine process exited"):
        await asyncio.wait_for(running, 60)
