"""What the benchmarks share: where the test assets are, their speech, the machine's name, the one
percentile definition every table in docs/benchmarks.md is computed with, the CPU and GPU use
of a process tree, and which code ran (for a run's JSON)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import nemotron_speech
from nemotron_speech.evaluation.metrics import percentile as _percentile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TINY_MODEL = ROOT / "tests" / "assets" / "asr" / "tiny-asr.nemo"
SPEECH = sorted((ROOT / "tests" / "assets" / "asr" / "speech").glob("[0-9][0-9].wav"))


def speech_audio() -> np.ndarray:
    """The test sentences one after another (float32, ~58 s): what the engine benchmark's
    streams read and its random weights are calibrated on (server_load sends them one by one)."""
    from nemotron_speech.asr.audio import load_audio

    if not SPEECH:
        raise FileNotFoundError(
            f"no test speech in {ROOT / 'tests' / 'assets' / 'asr' / 'speech'}: run the "
            "benchmarks from a full checkout of the repository (the WAV files are tracked)"
        )
    return np.concatenate([load_audio(path) for path in SPEECH])


def percentile(values: Sequence[float], q: float) -> float:
    """`nemotron-speech eval`'s percentile (the project's one definition), NaN for no values
    where eval reports null."""
    value = _percentile(values, q)
    return float("nan") if value is None else value


def process_tree_cpu_seconds(pid: int) -> tuple[dict[int, float], float]:
    """CPU seconds (user + system) of process `pid` and of every descendant alive now (a
    server's front and engine processes), re-discovered at each call, by process id; and of
    `pid`'s main thread alone (a one-process server's event loop)."""

    def read(path: str) -> tuple[int, float]:  # (parent pid, CPU seconds)
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    processes = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                processes[int(entry.name)] = read(f"{entry}/stat")
            except (OSError, IndexError, ValueError):  # ended while being read
                continue
    children: dict[int, list[int]] = {}
    for process, (parent, _) in processes.items():
        children.setdefault(parent, []).append(process)
    tree, frontier = [], [pid]
    while frontier:
        tree += frontier
        frontier = [child for parent in frontier for child in children.get(parent, [])]
    by_process = {p: processes[p][1] for p in tree if p in processes}
    return by_process, read(f"/proc/{pid}/task/{pid}/stat")[1]


class GpuSampler:
    """Samples `nvidia-smi`'s utilisation and memory of one GPU in a background thread while
    used as a context manager; `summary()` is None where nvidia-smi does not exist."""

    def __init__(self, index: int, interval: float = 0.5):
        self.available = shutil.which("nvidia-smi") is not None
        self._command = [
            "nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]  # fmt: skip
        self._interval = interval
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            done = subprocess.run(self._command, capture_output=True, text=True, check=False)
            if done.returncode == 0 and done.stdout.strip():
                busy, memory = done.stdout.split(",")
                self._samples.append((float(busy), float(memory)))

    def summary(self) -> dict | None:
        if not self.available:
            return None
        busy = [b for b, _ in self._samples]
        return {
            "utilization_percent_mean": round(sum(busy) / len(busy), 1) if busy else None,
            "utilization_percent_p50": percentile(busy, 50) if busy else None,
            "memory_used_mib_max": max((m for _, m in self._samples), default=None),
            "samples": len(busy),
        }


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_result(path: Path, result: dict) -> None:
    """The benchmark's JSON record (under `results/` by default), and where it went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def code_identity() -> dict:
    """Which nemotron_speech ran: where it was imported from and a hash of its sources (a copy
    on a GPU machine has no git history; hash a checkout's `src/nemotron_speech` to compare)."""
    package = Path(nemotron_speech.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return {"package": str(package), "sources_sha256": digest.hexdigest()}
