"""Scoring decoded utterances against references, and the table and JSON that report it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nemotron_speech.evaluation.dataset import Utterance
from nemotron_speech.evaluation.metrics import (
    EditCounts,
    edit_distance,
    percentile,
    word_counts,
)


@dataclass(frozen=True)
class Decoded:
    """What one configuration made of one utterance. `tokens` are the engine's token ids (a
    server sends only text); `finalize_seconds` is the time from the end of the audio to the
    final text."""

    text: str
    tokens: tuple[int, ...] | None = None
    finalize_seconds: float | None = None


@dataclass(frozen=True)
class Run:
    """One configuration's pass over the set. `offline` is the fp32 whole-utterance decoding
    at the same right context, when it was run; `wall_seconds` covers the streaming only."""

    source: str  # "engine" or the server's URL
    right_context: int
    chunk_ms: float
    precision: str  # fp32 / bf16 / fp16, or "as deployed" for a server
    decoded: list[Decoded]
    wall_seconds: float
    offline: list[Decoded] | None = None


def score(
    run: Run,
    utterances: Sequence[Utterance],
    normalize: Callable[[str], str],
    worst: int,
) -> dict:
    """One row of the report: error rates, offline comparison, speed and the worst utterances,
    plus every utterance's result for machines."""
    details, words = [], EditCounts()
    char_errors = char_count = 0
    for utterance, decoded in zip(utterances, run.decoded, strict=True):
        reference, hypothesis = normalize(utterance.text), normalize(decoded.text)
        counts = word_counts(reference, hypothesis)
        words += counts
        char_errors += edit_distance(reference, hypothesis)
        char_count += len(reference)
        details.append(
            {
                "key": utterance.key,
                "seconds": utterance.duration,
                "reference": utterance.text,
                "hypothesis": decoded.text,
                "word_errors": counts.errors,
                "reference_words": counts.reference_length,
                "wer": counts.rate,
                "finalize_ms": _ms(decoded.finalize_seconds),
            }
        )
    latencies = [d.finalize_seconds for d in run.decoded if d.finalize_seconds is not None]
    audio_seconds = sum(u.duration for u in utterances)
    row = {
        "source": run.source,
        "right_context": run.right_context,
        "chunk_ms": run.chunk_ms,
        "precision": run.precision,
        "utterances": len(details),
        "audio_seconds": audio_seconds,
        "wer": words.rate,
        "substitutions": words.substitutions,
        "insertions": words.insertions,
        "deletions": words.deletions,
        "reference_words": words.reference_length,
        "cer": char_errors / max(char_count, 1),
        "rtf": run.wall_seconds / audio_seconds if audio_seconds else None,
        "finalize_ms": {
            "p50": _ms(percentile(latencies, 50)),
            "p90": _ms(percentile(latencies, 90)),
        },
        "offline_wer": None,
        "agreement": None,
    }
    if run.offline is not None:
        row["offline_wer"] = _offline_wer(utterances, run.offline, normalize)
        row["agreement"] = agreement(run.decoded, run.offline)
        for detail, offline in zip(details, run.offline, strict=True):
            detail["offline"] = offline.text
    ranked = sorted(details, key=lambda d: (d["word_errors"], d["wer"]), reverse=True)
    row["worst"] = [d for d in ranked[:worst] if d["word_errors"]]
    row["details"] = details
    return row


def agreement(streamed: Sequence[Decoded], offline: Sequence[Decoded]) -> dict:
    """How close streaming came to offline decoding: utterances that came out identical, and
    1 - edit distance / length over token ids (engine) or raw words (a server sends text)."""
    tokens = all(d.tokens is not None for d in (*streamed, *offline))
    identical = distance = length = 0
    for stream, reference in zip(streamed, offline, strict=True):
        ours = stream.tokens if tokens else stream.text.split()
        theirs = reference.tokens if tokens else reference.text.split()
        identical += tuple(ours) == tuple(theirs)
        distance += edit_distance(theirs, ours)
        length += len(theirs)
    return {
        "identical": identical,
        "of": len(offline),
        "unit": "tokens" if tokens else "words",
        "rate": 1.0 - distance / max(length, 1),
    }


def _offline_wer(
    utterances: Sequence[Utterance], offline: Sequence[Decoded], normalize: Callable[[str], str]
) -> float:
    total = EditCounts()
    for utterance, decoded in zip(utterances, offline, strict=True):
        total += word_counts(normalize(utterance.text), normalize(decoded.text))
    return total.rate


def format_table(rows: Sequence[dict]) -> str:
    """The rows as a fixed-width table, then each row's worst utterances."""
    header = (
        "R",
        "chunk",
        "precision",
        "WER %",
        "CER %",
        "S/I/D",
        "offline WER %",
        "agree",
        "RTF",
        "finalize p50/p90 ms",
    )
    lines = [header]
    for row in rows:
        agree = row["agreement"]
        latency = row["finalize_ms"]
        lines.append(
            (
                str(row["right_context"]),
                f"{row['chunk_ms']:.0f} ms",
                row["precision"],
                _percent(row["wer"]),
                _percent(row["cer"]),
                f"{row['substitutions']}/{row['insertions']}/{row['deletions']}",
                _percent(row["offline_wer"]),
                f"{agree['identical']}/{agree['of']} {agree['rate']:.1%}" if agree else "-",
                f"{row['rtf']:.3f}" if row["rtf"] is not None else "-",
                f"{_number(latency['p50'])}/{_number(latency['p90'])}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = [
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    for row in rows:
        if row["worst"]:
            table.append(f"\nworst at R={row['right_context']} {row['precision']}:")
            table.extend(
                f"  {d['key']}  {d['word_errors']} of {d['reference_words']} words\n"
                f"    ref: {d['reference']}\n    hyp: {d['hypothesis']}"
                for d in row["worst"]
            )
    return "\n".join(table)


def progress(total: int, description: str):
    """A progress bar on stderr when it is a terminal (tqdm comes with NeMo and the eval
    extra); silent in logs and pipes."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="utt", disable=None, leave=False)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.2f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
