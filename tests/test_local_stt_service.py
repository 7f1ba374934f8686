"""`NemotronLocalSTTService`: the engine in-process (no server), fed espeak speech paced in real
time through the real Silero VAD; same frames and finalize semantics as the WebSocket service."""

from __future__ import annotations

import subprocess
import sys
import threading
from itertools import chain

import pytest
from pipecat.frames.frames import ErrorFrame

from nemotron_speech.services.local_stt import NemotronLocalSTTService
from nemotron_speech.testing.sentences import SENTENCES
from nemotron_speech.testing.stt_pipeline import (
    check_turns,
    conversation,
    paced,
    run_stt,
    silence,
    wait_for,
)

TURNS = [11, 2]
ENGINE_CALLS = ("open_stream", "feed", "step", "finalize", "close")


def speak(audio: bytes, turns: int):
    return lambda tap: chain(paced(audio), wait_for(lambda: len(tap.finals) == turns, 10))


async def test_loads_the_model_on_start_and_finalizes_each_turn(asr_model_path, speech_wavs):
    audio, spans = conversation(speech_wavs[i] for i in TURNS)
    stt = NemotronLocalSTTService(model_path=asr_model_path, right_context=1)
    down, _ = await run_stt(stt, speak(audio, len(TURNS)), start_timeout=120)
    check_turns(down, [SENTENCES[i] for i in TURNS], spans)


async def test_every_engine_call_runs_on_one_thread_off_the_loop(asr_model_path, speech_wavs):
    from nemotron_speech.asr import AsrEngine

    engine = AsrEngine.load(asr_model_path, right_context=6)
    threads: set[str] = set()
    for name in ENGINE_CALLS:
        method = getattr(engine, name)

        def recorded(*args, _method=method, **kwargs):
            threads.add(threading.current_thread().name)
            return _method(*args, **kwargs)

        setattr(engine, name, recorded)
    audio, spans = conversation([speech_wavs[4]])
    down, _ = await run_stt(NemotronLocalSTTService(engine=engine), speak(audio, 1))
    check_turns(down, [SENTENCES[4]], spans)
    assert len(threads) == 1 and threads != {threading.current_thread().name}, threads
    assert engine.open_streams == 0, "the stream was not closed"


def test_takes_a_model_or_an_engine():
    with pytest.raises(ValueError, match="exactly one"):
        NemotronLocalSTTService()


def test_import_does_not_load_torch():
    code = (
        "import sys; from nemotron_speech import NemotronLocalSTTService; "
        "assert 'torch' not in sys.modules and 'nemo' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_a_missing_model_is_a_permanent_error_frame(tmp_path):
    stt = NemotronLocalSTTService(model_path=tmp_path / "missing.nemo")
    _, up = await run_stt(stt, lambda tap: paced(silence(0.2)), start_timeout=60)
    errors = [frame.error for frame in up if isinstance(frame, ErrorFrame)]
    assert any("cannot start the ASR engine" in e and "missing.nemo" in e for e in errors), errors
    assert not stt.is_usable
