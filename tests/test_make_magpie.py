"""The committed Magpie test model is what `make_magpie` builds, and the engine can load it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemotron_speech.testing.make_magpie import (
    BUILD_FILE,
    CODEC_FILE,
    MAGPIE_FILE,
    build,
    environment,
)
from nemotron_speech.testing.make_model import weights_sha256
from nemotron_speech.tts.magpie import MagpieEngine

ASSETS = Path(__file__).resolve().parent / "assets" / "tts"


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((ASSETS / BUILD_FILE).read_text())


def test_committed_model_matches_its_record(record):
    engine = MagpieEngine.load(ASSETS / MAGPIE_FILE, ASSETS / CODEC_FILE)
    assert weights_sha256(engine.model) == record["magpie_weights_sha256"]
    assert weights_sha256(engine.model._codec_model) == record["codec_weights_sha256"]
    assert (len(engine.voices), engine.sample_rate) == (record["speakers"], record["sample_rate"])
    assert sum(record["bytes"].values()) < 4_000_000  # small enough to commit


def test_make_magpie_reproduces_the_committed_model(tmp_path, record):
    rebuilt = build(tmp_path, log=lambda line: None)
    assert rebuilt["bytes"] == record["bytes"]
    if environment() != record["environment"]:
        pytest.skip(f"bit-identity is promised only on {record['environment']}")
    assert rebuilt["magpie_weights_sha256"] == record["magpie_weights_sha256"]
    assert rebuilt["codec_weights_sha256"] == record["codec_weights_sha256"]
