"""Test speech: each training sentence rendered by espeak-ng as 16 kHz mono PCM16 WAV.

sox runs with `-D` (no dither), so the same espeak-ng build renders byte-identical files.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from nemotron_speech.protocol import SAMPLE_RATE
from nemotron_speech.testing.sentences import SENTENCES


def require_tools() -> None:
    """Fail with the install step when espeak-ng or sox is missing."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found; install with: apt-get install espeak-ng sox"
        )


def render(text: str, out: Path, words_per_minute: int = 150) -> Path:
    """Render `text` to `out` as 16 kHz mono PCM16, normalised to -3 dBFS."""
    require_tools()
    raw = out.with_suffix(".raw.wav")
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "-w", str(raw), text],
        check=True,
    )
    subprocess.run(
        [
            "sox",
            str(raw),
            "-D",
            "-r",
            str(SAMPLE_RATE),
            "-c",
            "1",
            "-b",
            "16",
            str(out),
            "norm",
            "-3",
        ],
        check=True,
    )
    raw.unlink()
    return out


def words_per_minute(index: int) -> int:
    """Speaking rate of sentence `index`: 140-170 wpm."""
    return 140 + 10 * (index % 4)


def render_all(out_dir: Path) -> list[Path]:
    """Render every training sentence as `NN.wav` at its speaking rate."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        render(text, out_dir / f"{index:02d}.wav", words_per_minute(index))
        for index, text in enumerate(SENTENCES)
    ]
