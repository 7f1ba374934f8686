"""The server's right context when none is given: the seed's 1 where the model has it (the
served tests check that), else the model's own, and the log says so."""

from __future__ import annotations

import logging

from omegaconf import open_dict

from nemotron_speech.asr.model import load_nemo_model
from nemotron_speech.server.app import ServerConfig, load_engine


def test_a_model_without_right_context_1_keeps_its_default(asr_model_path, tmp_path):
    model = load_nemo_model(asr_model_path)
    contexts = [list(c) for c in model.encoder.att_context_size_all if c[1] != 1]
    with open_dict(model.cfg):  # the same weights, built with one right context fewer
        model.cfg.encoder.att_context_size = contexts
    path = tmp_path / "no-r1.nemo"
    model.save_to(str(path))
    # a handler of the test's own on the server's logger: NeMo's logging.setLevel (model
    # loading calls it) lowers the levels of handlers pytest's caplog shares once NeMo's TTS
    # modules were imported in this process, which emptied caplog.text in random order
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("nemotron_speech.server.app")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        engine = load_engine(ServerConfig(model=path))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    supported = sorted(right for _, right in contexts)
    assert engine.supported_right_contexts == supported
    assert engine.right_context == contexts[0][1]
    expected = f"the model has no right context 1 (it supports {supported}): using its default"
    assert expected in [record.getMessage() for record in records]
