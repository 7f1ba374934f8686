"""Start the ASR server as a child process, learn its port, wait until it is ready, stop it.

Used by the tests and `benchmarks/server_load.py`. The server is told `--port 0` (the kernel
picks a free port, so servers started side by side never race for one) and `--port-file`, where
it writes the port once it listens; `/health` answers 200 once the model is loaded and warmed up.
Stopping sends SIGTERM: the server finalizes its open streams and exits.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nemotron_speech.child_server import ChildServer, http_get, spawn


@dataclass
class AsrServerProcess(ChildServer):
    """A running `python -m nemotron_speech.server` and how to reach it."""

    port: int = 0
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def http(self, path: str) -> tuple[int, str]:
        """Status and body of `GET path` (status 0: not listening)."""
        return http_get(f"http://{self.host}:{self.port}{path}")

    def metrics(self) -> dict[str, float]:
        return read_metrics(self.url)

    def metric(self, name: str) -> float:
        samples = self.metrics()
        if name not in samples:
            raise KeyError(f"{name} not in /metrics: {sorted(samples)}")
        return samples[name]

    def wait_for_metric(self, name: str, value: float, timeout: float = 10.0) -> None:
        """Poll until metric `name` equals `value` (a gauge settling after a disconnect)."""
        deadline = time.monotonic() + timeout
        while abs(self.metric(name) - value) > 1e-6:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} = {self.metric(name)}, expected {value}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Block until `/health` answers 200; the seconds that took."""
        return self.wait_until(lambda: self.http("/health")[0] == 200, "ready", timeout)


def read_metrics(url: str) -> dict[str, float]:
    """Every sample of the `/metrics` of the server at `url` (ws:// or http://), keyed as
    written, e.g. `asr_transcripts_total{kind="final"}`."""
    status, text = http_get(f"{url.replace('ws://', 'http://', 1)}/metrics")
    if status != 200:
        raise ConnectionError(f"{url}/metrics answered {status or 'nothing'}: {text}")
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def start_server(
    *options: str,
    model: Path | None = None,
    log_path: Path | None = None,
    host: str = "127.0.0.1",
    ready: bool = True,
    timeout: float = 180.0,
    extra_env: dict[str, str] | None = None,
) -> AsrServerProcess:
    """Start `python -m nemotron_speech.server [--model MODEL] OPTIONS` on a free port of `host`
    and return once it listens and, when `ready`, once `/health` says ready (the model is loaded).

    Without `model` the server finds the one `nemotron-speech download asr` fetched. `options`
    come last, so a `--port N` among them wins over the free port. Output goes to `log_path` (or
    this process's stdout and stderr). Raises `ServerStartError` with the log tail if the server
    exits or `timeout` passes.
    """
    with tempfile.TemporaryDirectory() as folder:
        port_file = Path(folder) / "port"
        argv = [sys.executable, "-m", "nemotron_speech.server", "--host", host, "--port", "0"]
        argv += ["--port-file", str(port_file)]
        argv += ["--model", str(model)] if model is not None else []
        process = spawn([*argv, *options], {**os.environ, **(extra_env or {})}, log_path)
        server = AsrServerProcess("ASR server", process, log_path, host=host)
        server.wait_until(port_file.exists, "listening", timeout)
        server.port = int(port_file.read_text())
    if ready:
        server.wait_ready(timeout)
    return server
