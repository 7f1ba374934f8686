"""Start a vLLM OpenAI server from a `LaunchSpec`: wait until healthy, warm it up, stop it cleanly.

Used by `nemotron-speech serve-llm` and by the tests (which start the CPU fixture server once per
session). Only the standard library is used: the caller's environment need not contain vLLM,
because vLLM runs as a child process (`child_server`), possibly from another virtual environment.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from nemotron_speech.child_server import ChildServer, ServerStartError, http_get, spawn
from nemotron_speech.child_server import free_port as free_port  # callers' name for it
from nemotron_speech.llm.recipe import LaunchSpec

# A short chat turn: the prompt goes through the chat template and the prefill kernels, and a few
# tokens through decoding. docker/compose.yaml's llm health check sends the same request.
WARMUP_REQUEST = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4}


class WarmupError(RuntimeError):
    """The warm-up completion failed; the message names the URL and what the server said."""


def is_healthy(base_url: str, timeout: float = 2.0) -> bool:
    """True when vLLM's `GET /health` answers 200 (it does once the engine has loaded)."""
    return http_get(f"{base_url.removesuffix('/v1')}/health", timeout)[0] == 200


def warm_up(
    base_url: str, model: str, *, api_key: str | None = None, timeout: float = 120.0
) -> float:
    """Send one short chat completion to `base_url` and return how long it took, in seconds.

    vLLM reports healthy before it has served a request, and the first request still pays for
    work done lazily: Triton autotuning of kernels at the shapes it meets (vLLM 0.32 caches the
    results on disk, `vllm/env_override.py`), the chat template's compilation, tokenizer and
    parser set-up. A warm-up spends that on this request instead of a user's first turn.
    """
    body = json.dumps({"model": model, **WARMUP_REQUEST}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = f"{base_url}/chat/completions"
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=timeout):
            pass
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()[:300]
        raise WarmupError(f"{url} answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise WarmupError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    return time.monotonic() - t0


@dataclass
class RunningServer(ChildServer):
    """A vLLM child process and where to reach it."""

    spec: LaunchSpec = field(kw_only=True)
    started_in_s: float = 0.0  # until /health answered 200
    warmup_s: float | None = None  # the warm-up completion, when one was sent

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    @property
    def model(self) -> str:
        return self.spec.served_model_name


def start_server(
    spec: LaunchSpec,
    *,
    log_path: Path | None = None,
    timeout: float = 600.0,
    extra_env: dict[str, str] | None = None,
    warm: bool = True,
) -> RunningServer:
    """Launch `spec` in its own process group, block until `/health` is 200, then (when `warm`)
    send the `warm_up` completion, so the first real request is served at full speed.

    Output goes to `log_path` (or is inherited when None, as the CLI wants). Raises
    `ServerStartError` with the log tail if the process dies, the warm-up fails or `timeout`
    seconds pass; the real model can take 10-15 minutes to load on a Spark, the CPU fixture ~20 s.
    """
    env = {**os.environ, **spec.env, **(extra_env or {})}
    server = RunningServer("vLLM", spawn(spec.argv, env, log_path), log_path, spec=spec)
    server.started_in_s = server.wait_until(lambda: is_healthy(spec.base_url), "healthy", timeout)
    if warm:
        try:
            left = max(timeout - server.started_in_s, 30.0)
            server.warmup_s = warm_up(spec.base_url, spec.served_model_name, timeout=left)
        except WarmupError as exc:
            server.stop()
            raise ServerStartError(f"vLLM warm-up failed: {exc}\n{server.log_tail()}") from None
    return server
