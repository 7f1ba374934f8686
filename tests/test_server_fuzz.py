"""Property-based fuzzing of the server: thousands of generated messages, no crash, no leaked
stream, every reply a valid message, and the server still transcribes exactly afterwards."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from server_fixtures import TOKEN, json_values, pcm16, transcribe
from websockets.sync.client import connect

from nemotron_speech.protocol import (
    Error,
    ProtocolError,
    Reset,
    Transcript,
    parse_client_message,
    parse_server_message,
)
from nemotron_speech.testing.sentences import SENTENCES

EXAMPLES = 120
MIN_MESSAGES = 10  # so EXAMPLES * MIN_MESSAGES >= 1,000 generated messages

control = st.fixed_dictionaries(
    {"type": st.sampled_from(["finalize", "reset", "end", "flush", "", "RESET"])},
    optional={"finalize": st.one_of(st.booleans(), json_values)},
).map(json.dumps)
message = st.one_of(
    st.binary(max_size=4001),  # audio of any length, odd ones included
    control,
    json_values.map(json.dumps),  # valid JSON of the wrong shape
    st.text(max_size=200),  # anything at all
)


def expected_finals(messages: list) -> tuple[int, int]:
    """(finals, flush answers) the server owes for `messages`, by the protocol's own parser."""
    finals = flushes = 0
    for item in messages:
        if isinstance(item, bytes):
            continue
        try:
            command = parse_client_message(item)
        except ProtocolError:
            continue
        if isinstance(command, Reset) and not command.finalize:
            flushes += 1
        else:
            finals += 1
    return finals, flushes


def send_and_check(url: str, messages: list) -> None:
    """Send `messages` and an `end`; every reply is valid, and exactly the owed finals come,
    the last one answering the test's own `end`."""
    owed_finals, owed_flushes = expected_finals(messages)
    with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert parse_server_message(ws.recv(timeout=10)).type == "ready"
        for item in messages:
            ws.send(item)
        ws.send('{"type": "end"}')
        ws.send('{"type": "reset", "finalize": false}')  # answered after the end's final
        finals = flushes = 0
        while flushes <= owed_flushes:
            reply = parse_server_message(ws.recv(timeout=30))
            assert isinstance(reply, Transcript | Error)
            if isinstance(reply, Error):
                assert reply.message
            elif reply.is_final and reply.finalize:
                finals += 1
            elif reply.is_final:
                flushes += 1
                assert flushes <= owed_flushes or finals == owed_finals + 1
        assert finals == owed_finals + 1


def test_generated_messages_never_break_the_server(token_asr_server, speech_wavs):
    """Whatever clients send, they get valid messages back and their finals; afterwards no
    stream is leaked and the server still transcribes exactly."""
    server = token_asr_server  # the session's: its counters and log from before are not ours
    log_before = len(server.log())
    connections = server.metric("asr_connections_total")
    bad_messages = server.metric('asr_client_errors_total{cause="bad_message"}')
    sent = {"messages": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(messages=st.lists(message, min_size=MIN_MESSAGES, max_size=25))
    def fuzz(messages):
        send_and_check(server.url, messages)
        sent["messages"] += len(messages)

    fuzz()
    assert sent["messages"] >= 1000
    server.wait_for_metric("asr_streams_open", 0)
    assert server.metric("asr_connections_total") - connections == EXAMPLES
    assert server.metric('asr_client_errors_total{cause="bad_message"}') - bad_messages > 100
    events = asyncio.run(transcribe(server.url, pcm16(speech_wavs[13])))
    assert events[-1] == Transcript(SENTENCES[13], is_final=True, finalize=True)
    assert server.process.poll() is None
    assert "Traceback" not in server.log()[log_before:]
