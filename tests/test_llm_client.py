"""`examples/llm_client.py` as a user runs it: `uv run` from an empty folder, without this package.

Against the real vLLM fixture server (slow: shares the session's server with the other vLLM
tests) and against a port where nothing listens.
"""

from __future__ import annotations

import pytest
from standalone import run_example

from nemotron_speech.llm.launcher import free_port
from nemotron_speech.testing.fixture_llm import HELLO_REPLY, SYSTEM_PROMPT


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_answers_as_a_standalone_script(vllm_server, tmp_path, stream):
    flags = ["--stream"] if stream else []
    result = run_example(
        "llm_client.py", "Hello!", "--url", vllm_server.base_url, "--model", vllm_server.model,
        "--system", SYSTEM_PROMPT, *flags, folder=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{HELLO_REPLY}\n"


def test_server_down_is_one_line_naming_the_url_and_the_fix(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = run_example("llm_client.py", "Hello!", "--url", url, folder=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach {url} (")
    assert "nemotron-speech serve-llm" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
