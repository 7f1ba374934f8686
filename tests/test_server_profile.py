"""`server_load --profile-seconds`: which process it profiles, how it reads py-spy's output, and
the error without py-spy. The recording is real: py-spy 0.4.3's raw output for the engine
process of a CPU server on the test model, recorded by `PATH=<py-spy's>:$PATH python -m
benchmarks.server_load --clients 4 --seconds 6 --profile-seconds 3 --workers 2 --engine-process`
(CI has no py-spy, so the command itself is not run here)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.server_profile import busiest_process, py_spy, summarize

ROOT = Path(__file__).resolve().parent.parent
ASSET = ROOT / "tests" / "assets" / "py-spy" / "engine-process.txt"


def test_summary_of_a_real_engine_process_recording():
    raw = ASSET.read_text()
    counts = [int(line.rpartition(" ")[2]) for line in raw.splitlines() if line.strip()]
    summary = summarize(raw)
    assert summary["samples"] == sum(counts)
    leaf = dict(summary["leaf"])
    inclusive = dict(summary["inclusive"])
    assert 0 < sum(leaf.values()) <= 1.0001
    assert all(":" not in name.rpartition("(")[2] for name in leaf)  # line numbers dropped
    # the scheduler's loop holds every sample of the engine process's main thread
    serve = inclusive["Scheduler.serve (nemotron_speech/server/scheduler.py)"]
    assert serve == max(inclusive.values())
    assert inclusive["AsrEngine.step (nemotron_speech/asr/engine.py)"] < serve
    assert all("nemotron_speech" in name for name in inclusive)


def test_summary_counts_a_function_once_per_stack_and_by_its_own_samples():
    raw = "\n".join(
        [
            "main (a.py:1);work (src/nemotron_speech/x.py:5);work (src/nemotron_speech/x.py:9) 3",
            "main (a.py:1);wait (a.py:2) 1",
        ]
    )
    summary = summarize(raw)
    assert summary["samples"] == 4
    assert dict(summary["leaf"]) == {"work (nemotron_speech/x.py)": 0.75, "wait (a.py)": 0.25}
    assert dict(summary["inclusive"]) == {"work (nemotron_speech/x.py)": 0.75}


def test_busiest_process_is_the_child_using_the_cpu():
    spin = "import time\nend = time.time() + 5\nwhile time.time() < end: pass"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"busy = subprocess.Popen([sys.executable, '-c', {spin!r}])\n"
            "idle = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(5)'])\n"
            "print(busy.pid, flush=True)\n"
            "busy.wait(); idle.wait()",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        busy = int(parent.stdout.readline())
        time.sleep(0.3)  # both children started
        assert busiest_process(parent.pid, window=1.0) == busy
    finally:
        parent.kill()
        parent.wait()


def test_without_py_spy_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="pip install py-spy"):
        py_spy()
