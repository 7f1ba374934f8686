"""Word and character error rates, the way published ASR numbers are computed.

Text goes through Whisper's English normaliser (the `whisper_normalizer` package, a copy of
OpenAI's `EnglishTextNormalizer`): lower case, punctuation and symbols removed, spelled-out
numbers written as digits, British spellings and contractions standardised. It is what the
Hugging Face Open ASR Leaderboard, NeMo's WER metric and NVIDIA's model card for Nemotron Speech
Streaming use, so a WER from `nemotron-speech eval` is comparable with theirs. An error rate is
a corpus rate, as jiwer and NeMo compute it: all errors over all reference words (or
characters), not a mean of per-utterance rates.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

NORMALIZERS = ("english", "none")


def make_normalizer(name: str) -> Callable[[str], str]:
    """`english`: Whisper's English normaliser; `none`: the text as written (case and
    punctuation count as errors), only whitespace collapsed."""
    if name == "none":
        return lambda text: " ".join(text.split())
    if name != "english":
        raise ValueError(f"unknown normalizer {name!r}; choose one of {', '.join(NORMALIZERS)}")
    from whisper_normalizer.english import EnglishTextNormalizer  # the eval extra

    english = EnglishTextNormalizer()
    return lambda text: " ".join(english(text).split())


@dataclass(frozen=True)
class EditCounts:
    """Edits that turn a reference into a hypothesis, and the reference's length."""

    substitutions: int = 0
    insertions: int = 0
    deletions: int = 0
    reference_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.insertions + self.deletions

    @property
    def rate(self) -> float:
        """Errors per reference unit; an empty reference scores 0 when the hypothesis is empty
        too and 1 per inserted unit otherwise (the rate is not bounded by 1)."""
        return self.errors / max(self.reference_length, 1)

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.insertions + other.insertions,
            self.deletions + other.deletions,
            self.reference_length + other.reference_length,
        )


def edit_counts(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> EditCounts:
    """Substitutions, insertions and deletions of one minimum-cost (Levenshtein) alignment;
    ties prefer a match or substitution, then a deletion."""
    ref, hyp = _as_ids(reference, hypothesis)
    matrix = np.stack(list(_rows(ref, hyp)))
    i, j = len(ref), len(hyp)
    substitutions = insertions = deletions = 0
    while i or j:
        differs = bool(i and j and ref[i - 1] != hyp[j - 1])
        if i and j and matrix[i, j] == matrix[i - 1, j - 1] + differs:
            substitutions += differs
            i, j = i - 1, j - 1
        elif i and matrix[i, j] == matrix[i - 1, j] + 1:
            deletions += 1
            i -= 1
        else:
            insertions += 1
            j -= 1
    return EditCounts(substitutions, insertions, deletions, len(ref))


def edit_distance(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> int:
    """The Levenshtein distance alone, in memory linear in the length: characters of a long
    recording would not fit the whole matrix."""
    return int(deque(_rows(*_as_ids(reference, hypothesis)), maxlen=1)[0][-1])


def word_counts(reference: str, hypothesis: str) -> EditCounts:
    """Word edits between two normalised texts."""
    return edit_counts(reference.split(), hypothesis.split())


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100), interpolated linearly between the two nearest ranks
    (numpy's default and `statistics.quantiles(method="inclusive")`'s definition); None for no
    values. The project's one definition: the benchmarks use it too."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def _as_ids(*sequences: Sequence[Hashable]) -> list[np.ndarray]:
    """The sequences as integer arrays over one shared vocabulary, so numpy can compare them."""
    vocabulary: dict[Hashable, int] = {}
    return [
        np.array([vocabulary.setdefault(item, len(vocabulary)) for item in seq], dtype=np.int64)
        for seq in sequences
    ]


def _rows(ref: np.ndarray, hyp: np.ndarray):
    """Rows of the Levenshtein matrix, one per reference unit, each computed in numpy: the
    substitution and deletion moves elementwise, the chain of insertions along the row as a
    running minimum (cell j = min over k <= j of best[k] + j - k)."""
    steps = np.arange(len(hyp) + 1, dtype=np.int32)
    row = steps
    yield row
    for index, unit in enumerate(ref, start=1):
        best = np.empty_like(row)
        best[0] = index
        np.minimum(row[:-1] + (hyp != unit), row[1:] + 1, out=best[1:])
        row = np.minimum.accumulate(best - steps) + steps
        yield row
