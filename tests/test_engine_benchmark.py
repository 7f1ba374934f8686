"""`benchmarks/engine.py` runs end to end on the CPU and records what its tables are built from.

The benchmark wraps engine internals (phase timers) and drives the real-time simulation in and
out of process, so an engine refactor that breaks it should fail here, not on a scarce GPU run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


def test_engine_benchmark_records_steps_agreement_and_real_time(tmp_path):
    out = tmp_path / "engine.json"
    command = [
        sys.executable,
        "benchmarks/engine.py",
        "--profile",
        "--variants",
        "stock,eager",
        "--right-contexts",
        "1",
        "--batches",
        "1,2",
        "--steps",
        "2",
        "--warm",
        "1",
        "--realtime",
        "2",
        "--realtime-seconds",
        "0.5",
        "--realtime-settle",
        "0.2",
        "--processes",
        "1,2",
        "--utterances",
        "2",
        "--json",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = [(row["variant"], row["batch"]) for row in result["steps"]]
    assert rows == [("stock", 1), ("stock", 2), ("eager", 1), ("eager", 2)]
    eager_rows = [row for row in result["steps"] if row["variant"] == "eager"]
    assert all(
        set(row["phases_ms"]) == {"features", "encoder", "decoder", "report"} for row in eager_rows
    )
    eager = result["variants"]["eager@R1"]
    assert eager["agreement_with_offline"]["identical_utterances"] == "2/2"
    real_time = [(row["streams"], row["processes"]) for row in eager["real_time"]]
    assert real_time == [(2, 1), (2, 2)]
    assert all(row["chunks"] > 0 and row["batch_p50"] >= 1 for row in eager["real_time"])
