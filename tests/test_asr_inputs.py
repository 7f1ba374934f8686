"""Bad models and bad audio files give clear errors; the CLI reports them and transcribes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from nemotron_speech import cli
from nemotron_speech.asr import AsrEngine, AudioFormatError, ModelLoadError, ModelNotFoundError
from nemotron_speech.asr.audio import load_audio
from nemotron_speech.testing.sentences import SENTENCES


def test_missing_model_names_path_and_download_step(tmp_path):
    missing = tmp_path / "nope.nemo"
    with pytest.raises(ModelNotFoundError) as error:
        AsrEngine.load(missing)
    assert str(missing) in str(error.value)
    assert "nemotron-speech download asr" in str(error.value)


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(b"not a tar archive" * 10)
    with pytest.raises(ModelLoadError, match=f"cannot load {bad} as a NeMo model"):
        AsrEngine.load(bad)


def test_offline_model_is_rejected(tmp_path):
    from nemotron_speech.testing.make_model import build_untrained

    model = build_untrained(list(SENTENCES) * 20, tmp_path, streaming=False)
    path = tmp_path / "offline.nemo"
    model.save_to(str(path))
    with pytest.raises(ModelLoadError, match="is not a cache-aware streaming model"):
        AsrEngine.load(path)


def test_unsupported_right_context(asr_model_path):
    with pytest.raises(ModelLoadError, match=r"right context 3 .* one of \[0, 1, 6, 13\]"):
        AsrEngine.load(asr_model_path, right_context=3)


def test_corrupt_and_empty_audio_files(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 4)
    with pytest.raises(AudioFormatError, match=f"cannot decode {corrupt}"):
        load_audio(corrupt)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioFormatError, match="contains no audio samples"):
        load_audio(empty)
    with pytest.raises(AudioFormatError, match="audio file not found"):
        load_audio(tmp_path / "absent.wav")


def test_stereo_is_downmixed_and_other_rates_resampled_or_rejected(tmp_path, speech_wavs):
    mono, _ = soundfile.read(speech_wavs[0], dtype="float32")
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, np.stack([mono, mono], axis=1), 16000, subtype="PCM_16")
    assert np.array_equal(load_audio(stereo), load_audio(speech_wavs[0]))
    rate_48k = tmp_path / "48k.wav"
    soundfile.write(rate_48k, np.repeat(mono, 3), 48000, subtype="FLOAT")
    assert len(load_audio(rate_48k)) == len(mono)
    with pytest.raises(AudioFormatError, match="sampled at 48000 Hz; the model needs 16000 Hz"):
        load_audio(rate_48k, resample=False)


def test_cli_transcribes_streaming_and_offline(asr_model_path, speech_wavs, capsys):
    assert (
        cli.main(
            [
                "transcribe",
                str(speech_wavs[6]),
                "--model",
                str(asr_model_path),
                "--right-context",
                "1",
            ]
        )
        == 0
    )
    assert (
        cli.main(["transcribe", str(speech_wavs[6]), "--model", str(asr_model_path), "--offline"])
        == 0
    )
    assert capsys.readouterr().out.splitlines() == [SENTENCES[6], SENTENCES[6]]


def test_cli_reports_a_missing_model(tmp_path, speech_wavs, capsys):
    assert cli.main(["transcribe", str(speech_wavs[0]), "--model", str(tmp_path / "m.nemo")]) == 2
    assert "nemotron-speech download asr" in capsys.readouterr().err


def test_console_script_runs(asr_model_path, speech_wavs):
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "nemotron-speech"),
            "transcribe",
            str(speech_wavs[11]),
            "--model",
            str(asr_model_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == SENTENCES[11]
    assert done.stderr == ""  # no NeMo telemetry ("OneLogger: ...", "No exporters ...")


def test_cli_checks_both_paths_before_importing_nemo(tmp_path, speech_wavs, asr_model_path):
    """A typo costs no NeMo import (~20 s): with torch and NeMo unimportable the answer is the
    same one-line error."""
    code = (
        "import sys\n"
        "for name in ('torch', 'nemo'):\n"
        "    sys.modules[name] = None\n"
        "from nemotron_speech import cli\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    cases = {
        (str(speech_wavs[0]), str(tmp_path / "m.nemo")): "error: ASR model not found: ",
        (str(tmp_path / "a.wav"), str(asr_model_path)): "error: audio file not found: ",
    }
    for (audio, model), expected in cases.items():
        done = subprocess.run(
            [sys.executable, "-c", code, "transcribe", audio, "--model", model],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(expected), done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr


def test_package_imports_without_torch_or_nemo():
    code = (
        "import sys\n"
        "for name in ('torch', 'nemo'):\n"
        "    sys.modules[name] = None\n"
        "import nemotron_speech, nemotron_speech.cli\n"
        "nemotron_speech.cli.build_parser()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
