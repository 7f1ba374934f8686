"""The committed test model is what `make_model` builds, and it does what the tests rely on."""

from __future__ import annotations

import json

import pytest

from nemotron_speech.asr.model import load_nemo_model
from nemotron_speech.testing.make_model import build, build_environment, weights_sha256

ALL_EXACT = {"0": 16, "1": 16, "6": 16, "13": 16}


@pytest.fixture(scope="module")
def record(asr_model_path) -> dict:
    return json.loads((asr_model_path.parent / "build.json").read_text())


def test_committed_model_matches_its_record(asr_model_path, record):
    """The record describes these weights (that they transcribe every sentence at every right
    context is test_engine.py's to check, on the model itself)."""
    assert weights_sha256(load_nemo_model(asr_model_path)) == record["weights_sha256"]


@pytest.mark.slow
def test_make_model_reproduces_the_committed_model(tmp_path, record, speech_wavs):
    rebuilt = build(tmp_path, log=lambda line: None)
    assert rebuilt["exact_matches_per_right_context"] == ALL_EXACT
    if build_environment() != record["environment"]:
        pytest.skip(f"bit-identity is promised only on {record['environment']}")
    assert rebuilt["speech_sha256"] == record["speech_sha256"]
    assert rebuilt["weights_sha256"] == record["weights_sha256"]
    assert {wav.name: wav.read_bytes() for wav in speech_wavs} == {
        wav.name: wav.read_bytes() for wav in sorted((tmp_path / "speech").glob("*.wav"))
    }
