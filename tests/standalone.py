"""Run an example the way its docstring says: `uv run SCRIPT ...`, with nothing but the script.

The script is copied into an empty folder and run from there, so neither this checkout nor the
test venv can help it: `uv` builds an environment from the script's inline metadata (PEP 723)
alone, which proves the example works for someone who has only downloaded that file. `uv` comes
with the `dev` extra; a missing `uv` fails the test (CI must not skip it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
UV = Path(sys.executable).parent / "uv"


def run_example(
    name: str, *args: str, folder: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`uv run NAME ARGS` in `folder` (an empty tmp folder) on a copy of examples/NAME; `--quiet`
    keeps uv's own progress lines out of the script's stderr."""
    assert UV.is_file(), f"{UV} is missing: install the dev extra (`pip install -e '.[dev]'`)"
    shutil.copy(EXAMPLES / name, folder / name)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # use the machine's Python 3.11+; no interpreter fetches
    return subprocess.run(
        [str(UV), "--quiet", "run", name, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
