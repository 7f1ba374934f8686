"""The wire messages: exact JSON of every message, parsing, errors, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_fixtures import json_values

from nemotron_speech.protocol import (
    CloseCode,
    End,
    Error,
    Finalize,
    ProtocolError,
    Ready,
    Reset,
    Transcript,
    encode,
    parse_client_message,
    parse_server_message,
)


def test_server_messages_are_the_seeds_json():
    assert json.loads(encode(Transcript("hi there", is_final=True, finalize=True))) == {
        "type": "transcript", "text": "hi there", "is_final": True, "finalize": True,
    }  # fmt: skip
    assert json.loads(encode(Error("bad"))) == {"type": "error", "message": "bad"}
    assert json.loads(encode(Ready(chunk_ms=160.0, right_context=1))) == {
        "type": "ready", "protocol_version": 3, "sample_rate": 16000, "chunk_ms": 160.0,
        "right_context": 1,
    }  # fmt: skip
    assert encode(End()) == '{"type":"end"}'
    # version 3: an interim says how much audio its text needed; a message without it omits it
    assert json.loads(encode(Transcript("hi", audio_ms=1360.0))) == {
        "type": "transcript", "text": "hi", "is_final": False, "finalize": False,
        "audio_ms": 1360.0,
    }  # fmt: skip
    assert encode(Finalize()) == '{"type":"finalize"}'
    assert encode(Reset(finalize=False)) == '{"type":"reset","finalize":false}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type": "reset", "finalize": true}', Reset(True)),
        ('{"type": "reset", "finalize": false}', Reset(False)),
        ('{"type": "reset"}', Reset(True)),  # the seed's reset always reset
        ('{"type": "end"}', End()),
        ('{"type": "finalize"}', Finalize()),
        ('{"type": "finalize", "finalize": false}', Finalize()),  # unknown fields ignored
        ('{"type": "end", "finalize": false, "extra": 1}', End()),  # unknown fields ignored
    ],
)
def test_parse_client_messages(text, message):
    assert parse_client_message(text) == message


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("hello", "text frames must be JSON messages (Expecting value: line 1 column 1 "
                  "(char 0)); send audio as binary frames"),
        ("3", 'a message must be a JSON object with a "type" field, got int'),
        ('{"finalize": true}', 'message has no "type" field; expected one of finalize, reset, end'),
        ('{"type": 7}', "unknown message type 7; expected one of finalize, reset, end"),
        ('{"type": "reset", "finalize": 1}', '"finalize" must be true or false, got 1'),
        ("[" * 100_000, None),  # nesting deeper than the JSON parser's recursion limit
    ],
)  # fmt: skip
def test_parse_client_errors(text, error):
    with pytest.raises(ProtocolError) as raised:
        parse_client_message(text)
    if error is not None:
        assert str(raised.value) == error


def test_server_messages_round_trip():
    messages = (
        Ready(chunk_ms=80.0),
        Transcript("a b", True, False),
        Transcript("a", audio_ms=92.5),
    )
    for message in (*messages, Error("x")):
        assert parse_server_message(encode(message)) == message
    for bad in ('"soon"', '"12"', "true", "NaN", "[1]"):
        with pytest.raises(ProtocolError, match="malformed transcript message.*audio_ms"):
            parse_server_message(f'{{"type": "transcript", "text": "a", "audio_ms": {bad}}}')
    assert parse_server_message('{"type": "transcript", "text": "a", "audio_ms": 160}') == (
        Transcript("a", audio_ms=160.0)
    )
    with pytest.raises(ProtocolError, match='unknown message type "nope"'):
        parse_server_message('{"type": "nope"}')
    with pytest.raises(ProtocolError, match="malformed transcript message"):
        parse_server_message('{"type": "transcript"}')


def test_close_codes_are_the_documented_ones():
    assert {code.name: int(code) for code in CloseCode} == {
        "NORMAL": 1000, "GOING_AWAY": 1001, "POLICY_VIOLATION": 1008, "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011, "TRY_AGAIN_LATER": 1013, "IDLE_TIMEOUT": 4000,
    }  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), json_values.map(json.dumps),
                 st.dictionaries(st.sampled_from(["type", "finalize"]),
                                 st.sampled_from(["reset", "end", True, False, None, 0]))
                 .map(json.dumps)))  # fmt: skip
def test_parse_client_message_never_fails_unexpectedly(text):
    """Any text either parses into a message or raises ProtocolError, never anything else."""
    try:
        message = parse_client_message(text)
    except ProtocolError as exc:
        assert str(exc)
    else:
        assert isinstance(message, Finalize | Reset | End)


def test_protocol_and_client_import_without_torch():
    code = (
        "import sys, nemotron_speech.protocol, nemotron_speech.client; "
        "heavy = {'torch', 'nemo', 'pipecat'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
