"""Property-based fuzzing of the server: thousands of generated messages, no crash, no leaked
stream, every reply a valid message, and the server still transcribes exactly afterwards."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_fixtures import TOKEN, json_values, pcm16, running_server, transcribe
from websockets.sync.client import connect

from nemotron_speech.protocol import Error, Transcript, parse_server_message
from nemotron_speech.testing.sentences import SENTENCES

EXAMPLES = 120
MIN_MESSAGES = 10  # so EXAMPLES * MIN_MESSAGES >= 1,000 generated messages
sent = {"messages": 0}

control = st.fixed_dictionaries(
    {"type": st.sampled_from(["reset", "end", "flush", "", "RESET"])},
    optional={"finalize": st.one_of(st.booleans(), json_values)},
).map(json.dumps)
message = st.one_of(
    st.binary(max_size=4001),  # audio of any length, odd ones included
    control,
    json_values.map(json.dumps),  # valid JSON of the wrong shape
    st.text(max_size=200),  # anything at all
)


@pytest.fixture(scope="module")
def server(asr_model_path, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("fuzz-server")
    with running_server(asr_model_path, log_dir, "--auth-token", TOKEN) as server:
        yield server


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(messages=st.lists(message, min_size=MIN_MESSAGES, max_size=25))
def test_generated_messages_never_break_a_stream(server, messages):
    """Whatever a client sends, it gets valid messages back and a final when it ends."""
    with connect(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert parse_server_message(ws.recv(timeout=10)).type == "ready"
        for item in messages:
            ws.send(item)
        ws.send('{"type": "end"}')
        sent["messages"] += len(messages)
        while True:
            reply = parse_server_message(ws.recv(timeout=30))
            assert isinstance(reply, Transcript | Error)
            if isinstance(reply, Error):
                assert reply.message
            elif reply.is_final and reply.finalize:
                break


def test_server_survived_the_fuzzing(server, speech_wavs):
    """Runs after the fuzzing (file order): enough messages, no leaks, exact transcripts."""
    assert sent["messages"] >= 1000
    server.wait_for_metric("asr_streams_open", 0)
    assert server.metric("asr_connections_total") == EXAMPLES
    assert server.metric('asr_client_errors_total{cause="bad_message"}') > 100
    events = asyncio.run(transcribe(server.url, pcm16(speech_wavs[13])))
    assert events[-1] == Transcript(SENTENCES[13], is_final=True, finalize=True)
    assert server.process.poll() is None
    assert "Traceback" not in server.log()
