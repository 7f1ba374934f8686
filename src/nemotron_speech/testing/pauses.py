"""Test turns with a pause inside the sentence ("I'd like to book ... a table for two").

Each test sentence is cut at the word boundary nearest its middle and 300-800 ms of silence are
inserted there; a VAD with `stop_secs=0.2` reports the user stopped 0.2 s into that pause. The
boundary is found from the text, not from a model: the first half of the words is rendered
alone with espeak-ng at the sentence's speaking rate, and the cut is the quietest 20 ms of the
full rendering within 150 ms of where that half ends.
"""

from __future__ import annotations

import tempfile
import wave
from pathlib import Path

import numpy as np

from nemotron_speech.protocol import SAMPLE_RATE
from nemotron_speech.testing.sentences import SENTENCES
from nemotron_speech.testing.speech import render, words_per_minute
from nemotron_speech.voice_agent.builder import VAD_STOP_SECS  # the finalize comes this far in

_SEARCH = int(0.15 * SAMPLE_RATE)
_WINDOW = int(0.02 * SAMPLE_RATE)


def pause_secs(index: int) -> float:
    """300-800 ms, varying with the sentence."""
    return 0.3 + 0.1 * (index % 6)


def word_boundary(index: int, samples: np.ndarray) -> int:
    """Sample index in sentence `index`'s rendering between its two halves of words."""
    words = SENTENCES[index].split()
    with tempfile.TemporaryDirectory() as folder:
        path = render(" ".join(words[: len(words) // 2]), Path(folder) / "half.wav",
                      words_per_minute(index))  # fmt: skip
        with wave.open(str(path), "rb") as wav:
            half = np.frombuffer(wav.readframes(wav.getnframes()), "<i2") / 32768.0
    end = int(np.flatnonzero(np.abs(half) > 0.02)[-1])
    low, high = max(0, end - _SEARCH), min(len(samples), end + _SEARCH)
    energy = np.convolve(samples[low:high] ** 2, np.ones(_WINDOW), "same")
    return low + int(np.argmin(energy))


def with_pause(index: int, samples: np.ndarray) -> tuple[np.ndarray, int]:
    """Sentence `index` with its pause inserted, and the sample where the VAD stop falls."""
    cut = word_boundary(index, samples)
    silence = np.zeros(int(pause_secs(index) * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([samples[:cut], silence, samples[cut:]]), cut + int(
        VAD_STOP_SECS * SAMPLE_RATE
    )


def same_words(finals: list[str], sentence: str) -> bool:
    """The finals of a turn, in order, say `sentence`: no word lost, changed or added.

    Letters are compared with spaces removed, because the generated model emits a word's
    tokens ahead of its audio (it knows its 16 sentences), so a final may end inside a word
    ("... attention lay" + "er"); a real model's final ends where the speaker paused.
    """
    return "".join(finals).replace(" ", "") == sentence.replace(" ", "")
