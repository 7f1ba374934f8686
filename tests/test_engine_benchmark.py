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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


ENGINE = "test_engine_benchmark_records_steps_agreement_and_real_time"
IMPORTS = "test_every_benchmark_imports_as_part_of_the_package"
NAMES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


@dataclass
class Run:
    """A command started by `runs` in its own folder; its test reads the outcome."""

    process: subprocess.Popen
    folder: Path

    def finish(self, timeout: float) -> tuple[int, str]:
        """The exit status and stderr, once it has exited."""
        return self.process.wait(timeout), (self.folder / "stderr").read_text()


def commands(out: Path) -> dict[str, list[str]]:
    """Each test's command: the benchmark with every table on a tiny scale, writing `out`; all
    benchmark modules imported in one process (so torch and NeMo load once)."""
    benchmark = [
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
    code = "import importlib, sys\nfor name in sys.argv[1:]: importlib.import_module(name)"
    imports = [sys.executable, "-c", code, *(f"benchmarks.{n}" for n in NAMES)]
    return {ENGINE: benchmark, IMPORTS: imports}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory) -> Iterator[dict[str, Run]]:
    """The selected tests' commands, started together: the import check is one process on one
    core for most of the benchmark's time, so both are done about when the benchmark alone is
    (31-33 s against 39 s one after the other on a quiet 2-core box). Each test reads only its own
    command's outcome."""
    selected = {i.originalname for i in request.session.items if i.module is request.module}
    folders = {name: tmp_path_factory.mktemp("run") for name in (ENGINE, IMPORTS)}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = {}
    for name, command in commands(folders[ENGINE] / "engine.json").items():
        if name in selected:
            with open(folders[name] / "stderr", "w") as stderr:
                process = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
                )
            started[name] = Run(process, folders[name])
    try:
        yield started
    finally:
        for run in started.values():  # a test that failed early leaves its command running
            run.process.kill()
            run.process.wait()


def test_engine_benchmark_records_steps_agreement_and_real_time(runs):
    returncode, stderr = runs[ENGINE].finish(timeout=600)
    assert returncode == 0, stderr[-3000:]
    result = json.loads((runs[ENGINE].folder / "engine.json").read_text())
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


def test_every_benchmark_imports_as_part_of_the_package(runs):
    """The commands in docs/benchmarks.md are `python -m benchmarks.NAME`: every module's imports
    resolve inside the package."""
    assert {"engine", "server_load", "services", "voice_to_voice"} <= set(NAMES)
    returncode, stderr = runs[IMPORTS].finish(timeout=300)
    assert returncode == 0, stderr[-3000:]
