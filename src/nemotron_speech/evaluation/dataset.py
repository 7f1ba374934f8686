"""Evaluation sets: a NeMo manifest or a folder of WAV + TXT pairs, checked before any decoding.

Every problem is reported at once, each with the manifest line or file it comes from, so a
large set is fixed in one go instead of failing an hour into a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nemotron_speech.protocol import SAMPLE_RATE

MAX_LISTED = 10  # problems listed in one error; the rest are counted
PACKET_BYTES = 640  # 20 ms of PCM16 per send, as a WebRTC client delivers audio
AUDIO_SUFFIXES = (".wav", ".flac")


class DatasetError(ValueError):
    """The evaluation set cannot be used; the message lists what to fix."""


@dataclass(frozen=True)
class Utterance:
    """One reference transcript and its audio. `source` says where it was defined (a manifest
    line or the TXT file), for error messages; `duration` is the audio file's own."""

    key: str
    audio: Path
    text: str
    source: str
    duration: float
    sample_rate: int


def load_dataset(path: str | Path, limit: int | None = None) -> list[Utterance]:
    """The utterances of a manifest (JSON lines) or a folder of WAV/FLAC files with same-named
    TXT references, in order; at most `limit` of them."""
    path = Path(path)
    if path.is_dir():
        entries, problems = _folder_entries(path)
    elif path.is_file():
        entries, problems = _manifest_entries(path)
    else:
        raise DatasetError(
            f"evaluation set not found: {path}; pass a NeMo manifest (one JSON object per line "
            'with "audio_filepath" and "text") or a folder of WAV files with TXT transcripts'
        )
    if limit is not None:
        entries = entries[:limit]
    if not entries and not problems:
        raise DatasetError(f"{path} holds no utterances")
    return _checked(entries, problems)


def read_samples(utterance: Utterance) -> np.ndarray:
    """The utterance's audio as float32 16 kHz mono, quantised to PCM16 as a client sends it, so
    streaming (which receives PCM16) and offline decoding see the same samples."""
    from nemotron_speech.asr.audio import load_audio
    from nemotron_speech.asr.errors import AudioFormatError

    try:
        samples = load_audio(utterance.audio)
    except AudioFormatError as exc:
        raise DatasetError(f"{utterance.source}: {exc}") from None
    return np.frombuffer(pcm16(samples), "<i2").astype(np.float32) / 32768.0


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as little-endian PCM16 (a PCM16 file's samples round-trip)."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


@dataclass(frozen=True)
class _Entry:
    key: str
    audio: Path
    text: str
    source: str


def _manifest_entries(path: Path) -> tuple[list[_Entry], list[str]]:
    entries, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not a UTF-8 text manifest ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not JSON ({exc.msg}); each line must be one JSON object")
            continue
        problem = _manifest_problem(item)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        audio = Path(item["audio_filepath"])
        audio = audio if audio.is_absolute() else path.parent / audio
        entries.append(_Entry(item["audio_filepath"], audio, item["text"], where))
    return entries, problems


def _manifest_problem(item) -> str | None:
    if not isinstance(item, dict):
        return f"expected a JSON object, got {type(item).__name__}"
    for field in ("audio_filepath", "text"):
        if field not in item:
            return f'no "{field}" field (a manifest line needs "audio_filepath" and "text")'
        if not isinstance(item[field], str):
            return f'"{field}" must be a string, got {type(item[field]).__name__}'
    return None


def _folder_entries(folder: Path) -> tuple[list[_Entry], list[str]]:
    audio_files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not audio_files:
        raise DatasetError(
            f"{folder} has no {' or '.join(AUDIO_SUFFIXES)} files; put each recording next to "
            "a .txt file of the same name holding its transcript"
        )
    entries, problems = [], []
    for audio in audio_files:
        transcript = audio.with_suffix(".txt")
        if not transcript.is_file():
            problems.append(f"{audio}: no transcript {transcript.name} next to it")
            continue
        key = str(audio.relative_to(folder))
        entries.append(_Entry(key, audio, transcript.read_text(encoding="utf-8"), str(transcript)))
    return entries, problems


def _checked(entries: list[_Entry], problems: list[str]) -> list[Utterance]:
    """Read every audio file's header (not its samples), so missing and undecodable files fail
    here, before any model runs, together with the `problems` found so far."""
    import soundfile

    utterances = []
    for entry in entries:
        if not entry.audio.is_file():
            problems.append(f"{entry.source}: audio file not found: {entry.audio}")
            continue
        try:
            info = soundfile.info(str(entry.audio))
        except Exception as exc:  # libsndfile reports unreadable files with several error types
            problems.append(f"{entry.source}: cannot read {entry.audio} as audio ({exc})")
            continue
        utterances.append(
            Utterance(
                entry.key,
                entry.audio,
                " ".join(entry.text.split()),
                entry.source,
                info.duration,
                info.samplerate,
            )
        )
    _raise_if(problems)
    return utterances


def resampled_count(utterances: Iterable[Utterance]) -> int:
    return sum(u.sample_rate != SAMPLE_RATE for u in utterances)


def _raise_if(problems: list[str]) -> None:
    if not problems:
        return
    listed = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    raise DatasetError(f"{len(problems)} problem(s) in the evaluation set:\n  {listed}{more}")
