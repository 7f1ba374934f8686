"""A server run as a child process: start it, wait until it is ready, stop it.

The vLLM launcher (`llm/launcher.py`) and the ASR server's (`server/launcher.py`) are built on
this, and the CLI, the tests and the benchmarks start servers through them. A child gets its own
process group, so `stop()` reaches whatever it forked (vLLM forks an engine core), and SIGTERM
when its parent dies, so a killed test run or CLI never leaves a server holding memory and a
port. Only the standard library is used: the caller's environment need not contain what the child
runs (vLLM often comes from another virtual environment).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


class ServerStartError(RuntimeError):
    """The server exited or was not ready in time; the message carries the log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (for servers that must be told their port)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """Status and body of a GET; status 0 when nothing answers (not listening, yet or any more)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(getattr(exc, "reason", exc))


@dataclass
class ChildServer:
    """A server process and its log."""

    name: str  # for messages: "vLLM", "ASR server"
    process: subprocess.Popen
    log_path: Path | None  # None: the output went to the parent's

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float) -> float:
        """Poll `ready` until it is true and return the seconds that took. If the process exits
        first, or `timeout` passes (then it is stopped), raise `ServerStartError` with the log
        tail."""
        t0 = time.monotonic()
        while not ready():
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise ServerStartError(
                    f"{self.name} not {what} after {timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        return time.monotonic() - t0

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group (a graceful shutdown), then SIGKILL if needed."""
        if self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()


def spawn(argv: Sequence[str], env: dict[str, str], log_path: Path | None) -> subprocess.Popen:
    """Start `argv` in its own process group, dying with its parent; output to `log_path` (or
    the parent's stdout and stderr when None, as a CLI wants)."""
    out: IO | None = open(log_path, "wb") if log_path else None  # noqa: SIM115 - child owns it
    try:
        return subprocess.Popen(
            list(argv),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        if out:
            out.close()


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the parent dies (no-op elsewhere)."""
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
