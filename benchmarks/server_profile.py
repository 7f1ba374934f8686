"""Where a loaded server's busiest process spends its time: `py-spy` samples it under load.

`server_load --profile-seconds S` records, in each N row once the server has the row's N streams
open and a second has passed, S seconds of the server process that used the most CPU over that
second (under load: the engine process with `--engine-process`, else the server itself), with
`py-spy record`. py-spy samples only threads that are running (a thread blocked in the kernel,
as the scheduler's wait for commands or a front's accept, is skipped; the scheduler's waiting is
`asr_scheduler_seconds_total{activity="idle"}`), so the shares are of the process's busy time, a
host wait for the GPU included. The raw stacks go beside the JSON; the row gets the functions
with the most samples of their own (leaf) and the project's functions by samples under them
(inclusive), each as a share of all samples.

Why py-spy: it attaches to a running process without changing its code or its timing much
(`--nonblocking`), which a profiler inside the engine process could not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import process_tree_cpu_seconds
from nemotron_speech.server.launcher import read_metrics

OWN_CODE = "nemotron_speech"  # frames of the project's own modules, for the inclusive list
TOP = 12
NO_FRAME = "(no Python frame)"  # py-spy saw the thread run outside Python code
# a raw frame: "function (path/to/file.py:123)" (py-spy 0.4); the line number is dropped so a
# function's samples add up over its lines
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str:
    """The py-spy executable, or a clear error naming the fix."""
    found = shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile-seconds needs py-spy on PATH: pip install py-spy")
    return found


def busiest_process(pid: int, window: float = 1.0) -> int:
    """The process of `pid`'s tree that used the most CPU over the next `window` seconds."""
    before, _ = process_tree_cpu_seconds(pid)
    time.sleep(window)
    after, _ = process_tree_cpu_seconds(pid)
    return max(after, key=lambda p: after[p] - before.get(p, after[p]))


class ServerProfiler:
    """Started before a row's load (`start`), on a background thread: once server `pid` at
    `url` has `streams` streams open (within `timeout` seconds), records `seconds` of its
    busiest process into `path`; `join` before reading `summary`."""

    def __init__(self, url: str, pid: int, streams: int, seconds: int, timeout: float, path: Path):
        self._command = [py_spy(), "record", "--nonblocking", "--rate", "100"]
        self._url, self._pid, self._streams = url, pid, streams
        self._seconds, self._timeout, self.path = seconds, timeout, path
        self.profiled: int | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            self._record()
        except Exception as exc:  # a failed profile must not cost the row its figures
            self.error = f"{type(exc).__name__}: {exc}"

    def _record(self) -> None:
        deadline = time.monotonic() + self._timeout
        while read_metrics(self._url).get("asr_streams_open", 0) < self._streams:
            if time.monotonic() > deadline:
                self.error = f"the server never had {self._streams} streams open"
                return
            time.sleep(0.2)
        self.profiled = busiest_process(self._pid)
        done = subprocess.run(
            [*self._command, "--pid", str(self.profiled), "--duration", str(self._seconds)]
            + ["--format", "raw", "--output", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            self.error = (done.stderr or done.stdout).strip()[-500:]

    def summary(self) -> dict:
        """What goes in the row's JSON (`summarize` of the recording, or why there is none)."""
        if self.error is not None or not self.path.is_file():
            return {"pid": self.profiled, "error": self.error or "py-spy wrote nothing"}
        return {"pid": self.profiled, "file": self.path.name, **summarize(self.path.read_text())}


def summarize(raw: str, top: int = TOP) -> dict:
    """Leaf and inclusive shares of py-spy's raw (collapsed) stacks: one line per distinct
    stack, `frame;frame;...;leaf count`, outermost first (a thread waiting in C, e.g. for the
    GPU or a socket, counts at its innermost Python frame)."""
    own, inclusive, total = Counter(), Counter(), 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [_name(frame) for frame in stack.split(";")] if stack else [NO_FRAME]
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            if OWN_CODE in frame:
                inclusive[frame] += samples

    def shares(counter: Counter) -> list[list]:
        return [[name, round(n / total, 3)] for name, n in counter.most_common(top)]

    return {"samples": total, "leaf": shares(own), "inclusive": shares(inclusive)}


def _name(frame: str) -> str:
    """`function (module path)`, the path from its package on (site-packages or the repo)."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["path"]
    for marker in ("site-packages/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def print_summary(summary: dict) -> None:
    """A few lines under the row's table."""
    if "error" in summary:
        print(f"profile of process {summary['pid']}: {summary['error']}")
        return
    print(f"profile of process {summary['pid']} ({summary['samples']} samples, {summary['file']})")
    for title in ("leaf", "inclusive"):
        items = ", ".join(f"{name} {share:.0%}" for name, share in summary[title][:8])
        print(f"  {title}: {items}")
