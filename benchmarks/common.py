"""What the benchmarks share: where the test assets are, the machine's name, and the one
percentile definition every table in docs/benchmarks.md is computed with."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TINY_MODEL = ROOT / "tests" / "assets" / "asr" / "tiny-asr.nemo"
SPEECH = sorted((ROOT / "tests" / "assets" / "asr" / "speech").glob("[0-9][0-9].wav"))


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100), interpolated linearly between the two nearest ranks: numpy's
    and `statistics.quantiles(method="inclusive")`'s definition. NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


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
