"""`python -m benchmarks.engine` runs end to end on the CPU and records what its tables are
built from.

The benchmark wraps engine internals (phase timers) and drives the real-time simulation in and
out of process, so an engine refactor that breaks it should fail here, not on a scarce GPU run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_engine_benchmark_records_steps_agreement_and_real_time(tmp_path):
    out = tmp_path / "engine.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.engine",
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
    # every row records what the model emitted while it was timed (a trained model's rows are
    # valid whatever it emits); stock NeMo decodes the same speech, not nothing
    assert all(row["valid"] and row["tokens_per_frame"] > 0 for row in result["steps"])
    assert result["valid"]
    eager_rows = [row for row in result["steps"] if row["variant"] == "eager"]
    assert all(
        set(row["phases_ms"]) == {"features", "encoder", "decoder", "report"} for row in eager_rows
    )
    eager = result["variants"]["eager@R1"]
    assert eager["agreement_with_offline"]["identical_utterances"] == "2/2"
    real_time = [(row["streams"], row["processes"]) for row in eager["real_time"]]
    assert real_time == [(2, 1), (2, 2)]
    assert all(
        row["chunks"] > 0 and row["batch_p50"] >= 1 and row["tokens_per_frame"] > 0
        for row in eager["real_time"]
    )


def test_every_benchmark_imports_as_part_of_the_package():
    """The commands in docs/benchmarks.md are `python -m benchmarks.NAME`: every module's imports
    resolve inside the package (one process, so torch and NeMo load once)."""
    names = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")
    assert {"engine", "server_load", "services", "voice_to_voice"} <= set(names)
    code = "import importlib, sys\nfor name in sys.argv[1:]: importlib.import_module(name)"
    done = subprocess.run(
        [sys.executable, "-c", code, *(f"benchmarks.{n}" for n in names)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
