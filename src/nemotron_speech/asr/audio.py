"""Reading audio files into the engine's format: float32 mono at 16 kHz."""

from __future__ import annotations

import logging
from math import gcd
from pathlib import Path

import numpy as np

from nemotron_speech.asr.errors import AudioFormatError
from nemotron_speech.protocol import SAMPLE_RATE

log = logging.getLogger(__name__)


def load_audio(path: str | Path, resample: bool = True) -> np.ndarray:
    """Decode `path`; downmix multi-channel audio and resample other rates to 16 kHz, or reject
    them with a clear message when `resample` is False."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise AudioFormatError(f"audio file not found: {path}")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports corrupt files with several error types
        raise AudioFormatError(f"cannot decode {path} as audio: {exc}") from exc
    if samples.shape[0] == 0:
        raise AudioFormatError(f"{path} contains no audio samples")
    if samples.shape[1] > 1:
        log.info("%s: downmixing %d channels to mono", path, samples.shape[1])
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        if not resample:
            raise AudioFormatError(
                f"{path} is sampled at {rate} Hz; the model needs {SAMPLE_RATE} Hz mono"
            )
        log.info("%s: resampling %d Hz to %d Hz", path, rate, SAMPLE_RATE)
        mono = _resample(mono, rate)
    return mono.astype(np.float32)


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    common = gcd(rate, SAMPLE_RATE)
    return resample_poly(samples, SAMPLE_RATE // common, rate // common)
