"""Start a vLLM OpenAI server from a `LaunchSpec`: wait until healthy, warm it up, stop it cleanly.

Used by `nemotron-speech serve-llm` and by the tests (which start the CPU fixture server once per
session). Only the standard library is used: the caller's environment need not contain vLLM,
because vLLM runs as a child process, possibly from another virtual environment.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nemotron_speech.llm.recipe import LaunchSpec

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
# A short chat turn: the prompt goes through the chat template and the prefill kernels, and a few
# tokens through decoding. docker/compose.yaml's llm health check sends the same request.
WARMUP_REQUEST = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4}


class ServerStartError(RuntimeError):
    """vLLM exited or did not become healthy in time; the message carries the log tail."""


class WarmupError(RuntimeError):
    """The warm-up completion failed; the message names the URL and what the server said."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (tests run servers side by side)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_healthy(base_url: str, timeout: float = 2.0) -> bool:
    """True when vLLM's `GET /health` answers 200 (it does once the engine has loaded)."""
    root = base_url.removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


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
class RunningServer:
    """A vLLM child process and where to reach it."""

    spec: LaunchSpec
    process: subprocess.Popen
    log_path: Path | None
    started_in_s: float  # until /health answered 200
    warmup_s: float | None = None  # the warm-up completion, when one was sent

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    @property
    def model(self) -> str:
        return self.spec.served_model_name

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group (vLLM forks an engine core), then SIGKILL if needed."""
        if self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the parent dies, so a killed test run or CLI
    never leaves a vLLM holding memory and a port (no-op elsewhere)."""
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
    seconds pass; the real model can take 10-15 minutes to load on a Spark, the CPU fixture ~25 s.
    """
    env = {**os.environ, **spec.env, **(extra_env or {})}
    out: IO | None = open(log_path, "wb") if log_path else None  # noqa: SIM115 - child owns it
    t0 = time.monotonic()
    process = subprocess.Popen(
        spec.argv,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    if out:
        out.close()
    server = RunningServer(spec, process, log_path, 0.0)
    while not is_healthy(spec.base_url):
        if process.poll() is not None:
            raise ServerStartError(
                f"vLLM exited with code {process.returncode}:\n{server.log_tail()}"
            )
        if time.monotonic() - t0 > timeout:
            server.stop()
            raise ServerStartError(f"vLLM not healthy after {timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(0.5)
    server.started_in_s = time.monotonic() - t0
    if warm:
        try:
            left = max(timeout - server.started_in_s, 30.0)
            server.warmup_s = warm_up(spec.base_url, spec.served_model_name, timeout=left)
        except WarmupError as exc:
            server.stop()
            raise ServerStartError(f"vLLM warm-up failed: {exc}\n{server.log_tail()}") from None
    return server
