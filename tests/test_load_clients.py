"""`benchmarks.server_load`'s client lag: an interim is timed from the send of the packet that
completed the audio its text needed (`audio_ms`), counted over the connection; and the CPU
benchmark itself, run short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.load_clients import PACKET_BYTES, Sends
from nemotron_speech.protocol import BYTES_PER_MS

PACKET_MS = PACKET_BYTES / BYTES_PER_MS  # 20 ms
ROOT = Path(__file__).resolve().parent.parent


def test_an_interim_is_timed_from_the_packet_that_completed_its_audio():
    sends = Sends()
    for k in range(10):
        sends.add(PACKET_BYTES, at=100.0 + k)
    assert sends.time_of(PACKET_MS) == 100.0  # exactly the first packet's audio
    assert sends.time_of(92.5) == 104.0  # inside the fifth packet: its send completed it
    assert sends.time_of(10 * PACKET_MS) == 109.0
    assert sends.time_of(10 * PACKET_MS + 0.5) is None  # audio not sent yet: not timed


def test_audio_is_counted_over_the_connection_and_times_only_the_current_sentence():
    sends = Sends()
    for k in range(10):
        sends.add(PACKET_BYTES, at=float(k))
    sends.clear()  # the next sentence, after the last one's final
    for k in range(5):
        sends.add(PACKET_BYTES, at=50.0 + k)
    assert sends.total == 15 * PACKET_BYTES
    assert sends.time_of(11 * PACKET_MS) == 50.0  # the connection's 11th packet
    assert sends.time_of(15 * PACKET_MS) == 54.0
    assert sends.time_of(16 * PACKET_MS) is None
    assert sends.time_of(10 * PACKET_MS) is None  # the last sentence's audio: not this one's


def test_the_cpu_benchmark_runs_and_accounts_for_every_byte(tmp_path):
    """docs/benchmarks.md's CPU command, short: the server on the test model, two clients at real
    time; every interim timed, every final exact, and every byte sent fed to the engine."""
    out = tmp_path / "load.json"
    command = [sys.executable, "-m", "benchmarks.server_load", "--clients", "2", "--seconds", "3"]
    result = subprocess.run(
        [*command, "--out", str(out)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["errors"] == 0 and row["valid"]
    assert row["finals"] >= 2 and row["exact"] == row["finals"]
    assert row["lag_ms"]["n"] == row["interims"] - row["untimed_interims"] > 0
    audio = row["audio_seconds"]
    assert audio["fed"] == audio["sent"] > 0
