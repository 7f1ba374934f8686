"""`nemotron-speech eval`: error-rate arithmetic against hand-computed cases, evaluation-set
errors, and the command on the test model (in process and through a real server) with the test
speech plus noisy and sped-up copies, so that the error rates are not all zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given
from hypothesis import strategies as st
from scipy.signal import resample_poly

from nemotron_speech.cli import main
from nemotron_speech.evaluation.dataset import DatasetError, Utterance, load_dataset
from nemotron_speech.evaluation.metrics import (
    EditCounts,
    edit_counts,
    edit_distance,
    make_normalizer,
    word_counts,
)
from nemotron_speech.evaluation.report import Decoded, Run, score
from nemotron_speech.testing.sentences import SENTENCES

ROOT = Path(__file__).resolve().parent.parent
CHOSEN = (11, 2, 4)  # three short sentences keep the model runs to seconds


def test_word_and_character_errors_of_a_hand_computed_case():
    # quick -> quack (substitution), brown (deletion), over (insertion)
    counts = word_counts("the quick brown fox jumps", "the quack fox jumps over")
    assert counts == EditCounts(substitutions=1, insertions=1, deletions=1, reference_length=5)
    assert counts.rate == pytest.approx(3 / 5)
    # characters: i -> a, "brown " deleted (6), " over" inserted (5)
    assert edit_distance("the quick brown fox jumps", "the quack fox jumps over") == 12
    assert edit_distance("hello world", "helo word") == 2


def test_rates_are_corpus_rates_over_normalised_text():
    utterances = [_utterance("a", "The quick brown fox jumps."), _utterance("b", "hello world")]
    run = Run(
        "engine", 1, 160.0, "fp32", [Decoded("the quack fox jumps over"), Decoded("helo word")], 1.0
    )
    row = score(run, utterances, make_normalizer("english"), worst=1)
    # 3 + 2 word errors over 5 + 2 words (a mean of utterance rates would be (3/5 + 1) / 2)
    assert (row["substitutions"], row["insertions"], row["deletions"]) == (3, 1, 1)
    assert row["wer"] == pytest.approx(5 / 7)
    assert row["cer"] == pytest.approx((12 + 2) / (25 + 11))
    assert [d["key"] for d in row["worst"]] == ["a"]
    exact = Run(
        "engine",
        1,
        160.0,
        "fp32",
        [Decoded("The quick brown fox, jumps!"), Decoded("Hello world")],
        1.0,
    )
    assert score(exact, utterances, make_normalizer("english"), worst=1)["wer"] == 0
    assert score(exact, utterances, make_normalizer("none"), worst=1)["wer"] == pytest.approx(3 / 7)


@given(st.lists(st.sampled_from("abc"), max_size=7), st.lists(st.sampled_from("abcd"), max_size=7))
def test_edit_counts_are_a_minimum_alignment(reference, hypothesis):
    counts = edit_counts(reference, hypothesis)
    assert (
        counts.errors == _levenshtein(reference, hypothesis) == edit_distance(reference, hypothesis)
    )
    # an alignment: every reference unit is matched, substituted or deleted
    assert len(hypothesis) == len(reference) - counts.deletions + counts.insertions


def test_bad_manifest_lines_are_all_reported_with_line_numbers(tmp_path, speech_wavs, capsys):
    (tmp_path / "notaudio.wav").write_text("not audio")
    lines = [
        json.dumps({"audio_filepath": str(speech_wavs[0]), "text": SENTENCES[0]}),
        "",
        "{not json",
        json.dumps({"audio_filepath": "missing.wav", "text": "x"}),
        json.dumps({"audio_filepath": str(speech_wavs[1])}),
        json.dumps({"audio_filepath": "notaudio.wav", "text": "x"}),
        json.dumps({"audio_filepath": str(speech_wavs[1]), "text": 3}),
        json.dumps([1, 2]),
    ]
    manifest = tmp_path / "set.json"
    manifest.write_text("\n".join(lines) + "\n")
    assert main(["eval", str(manifest), "--url", "ws://127.0.0.1:9"]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert "6 problem(s)" in error
    for number, words in [
        (3, "not JSON"),
        (5, 'no "text" field'),
        (7, '"text" must be a string'),
        (8, "expected a JSON object"),
        (4, f"audio file not found: {tmp_path / 'missing.wav'}"),
        (6, "cannot read"),
    ]:
        assert f"{manifest}:{number}: {words}" in error


def test_folder_of_wav_and_txt_pairs(tmp_path, speech_wavs):
    for index in (0, 1):
        (tmp_path / f"{index}.wav").write_bytes(speech_wavs[index].read_bytes())
    (tmp_path / "0.txt").write_text(SENTENCES[0] + "\n")
    with pytest.raises(DatasetError, match=r"1\.wav: no transcript 1\.txt"):
        load_dataset(tmp_path)
    (tmp_path / "1.txt").write_text(SENTENCES[1])
    utterances = load_dataset(tmp_path)
    assert [(u.key, u.text) for u in utterances] == [
        ("0.wav", SENTENCES[0]),
        ("1.wav", SENTENCES[1]),
    ]
    with pytest.raises(DatasetError, match="evaluation set not found"):
        load_dataset(tmp_path / "nowhere.jsonl")


@pytest.fixture(scope="module")
def perturbed_set(tmp_path_factory, speech_wavs):
    """Each chosen sentence clean (one of them at 22.05 kHz, resampled by eval), with white
    noise at 5 dB SNR, and 25 % faster; a manifest with paths relative to its folder."""
    folder = tmp_path_factory.mktemp("eval-set")
    (folder / "audio").mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for index in CHOSEN:
        clean, rate = soundfile.read(speech_wavs[index], dtype="float32")
        noise = rng.normal(0, np.sqrt(np.mean(clean**2)) / 10 ** (5 / 20), len(clean))
        variants = {
            "clean": (clean, rate),
            "noise": (clean + noise, rate),
            "fast": (resample_poly(clean, 4, 5), rate),
        }
        if index == CHOSEN[0]:
            variants["clean"] = (resample_poly(clean, 441, 320), 22050)
        for name, (samples, sample_rate) in variants.items():
            path = f"audio/{index:02d}-{name}.wav"
            soundfile.write(folder / path, np.clip(samples, -1, 1), sample_rate, subtype="PCM_16")
            entries.append({"audio_filepath": path, "text": SENTENCES[index], "duration": 0})
    (folder / "set.json").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return folder / "set.json"


@pytest.fixture(scope="module")
def model_report(perturbed_set, asr_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-report") / "report.json"
    options = ["--right-contexts", "1,13", "--precisions", "fp32,bf16", "--streams", "2"]
    command = ["eval", str(perturbed_set), "--model", str(asr_model_path), "--device", "cpu"]
    assert main([*command, *options, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_model_streaming_offline_and_perturbed_errors(model_report):
    rows = {(r["right_context"], r["precision"]): r for r in model_report["results"]}
    assert list(rows) == [(1, "fp32"), (1, "bf16"), (13, "fp32"), (13, "bf16")]
    assert [rows[1, "fp32"]["chunk_ms"], rows[13, "fp32"]["chunk_ms"]] == [160.0, 1120.0]
    for (right_context, precision), row in rows.items():
        details = {d["key"]: d for d in row["details"]}
        assert row["wer"] == pytest.approx(
            sum(d["word_errors"] for d in details.values())
            / sum(d["reference_words"] for d in details.values())
        )
        # one offline decoding per right context, shared by its precisions
        assert row["offline_wer"] == rows[right_context, "fp32"]["offline_wer"]
        assert row["agreement"]["of"] == 9 and row["agreement"]["unit"] == "tokens"
        assert 0 < row["rtf"] < 10
        assert 0 < row["finalize_ms"]["p50"] <= row["finalize_ms"]["p90"]
        assert all(d["key"] in details and d["word_errors"] for d in row["worst"])
        if precision != "fp32":
            continue
        # the clean copies (one resampled from 22.05 kHz) come out word for word, the noisy and
        # fast ones do not
        assert all(details[f"audio/{i:02d}-clean.wav"]["word_errors"] == 0 for i in CHOSEN)
        assert sum(d["word_errors"] for key, d in details.items() if "clean" not in key) > 0
        assert row["wer"] > 0 and row["cer"] > 0
        # fp32 streaming equals offline decoding token for token, perturbed audio included
        assert row["agreement"] == {"identical": 9, "of": 9, "unit": "tokens", "rate": 1.0}
        assert row["offline_wer"] == pytest.approx(row["wer"])
        assert all(d["offline"] == d["hypothesis"] for d in details.values())


def test_documented_command_on_the_test_speech(monkeypatch, capsys):
    """docs/accuracy.md's first command, as written, on the committed manifest of the test
    speech (which must list every test sentence)."""
    monkeypatch.chdir(ROOT)
    lines = (ROOT / "tests/assets/asr/speech.json").read_text().splitlines()
    manifest = [json.loads(line) for line in lines]
    assert [m["text"] for m in manifest] == list(SENTENCES)
    assert all((ROOT / "tests/assets/asr" / m["audio_filepath"]).is_file() for m in manifest)
    command = "eval tests/assets/asr/speech.json --model tests/assets/asr/tiny-asr.nemo"
    assert main([*command.split(), "--right-contexts", "1"]) == 0
    (row,) = _table_rows(capsys.readouterr().out)
    assert row[:5] == ["1", "160", "ms", "fp32", "0.00"]  # R, chunk, precision, WER %
    assert "16/16 100.0%" in " ".join(row)


def test_server_measured_as_deployed_without_torch(
    perturbed_set, asr_model_path, asr_server, tmp_path
):
    """docs/accuracy.md's server command with torch and NeMo unimportable; then the perturbed
    set paced at real time, where the server's words equal the model's own offline decoding."""
    code = (
        "import sys\n"
        "class Blocked:\n"  # scipy looks torch up in sys.modules, so make it unimportable
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('torch', 'nemo'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Blocked())\n"
        "from nemotron_speech.cli import main\n"
        f"code = main(['eval', 'tests/assets/asr/speech.json', '--url', {asr_server.url!r}])\n"
        "assert not {'torch', 'nemo'} & set(sys.modules)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    (row,) = _table_rows(done.stdout)
    assert row[:6] == ["1", "160", "ms", "as", "deployed", "0.00"]

    paced = tmp_path / "paced.json"
    command = ["eval", str(perturbed_set), "--url", asr_server.url, "--realtime", "--streams", "9"]
    offline = ["--model", str(asr_model_path), "--device", "cpu", "--json", str(paced)]
    assert main([*command, *offline]) == 0
    (row,) = json.loads(paced.read_text())["results"]
    assert (row["right_context"], row["precision"], row["utterances"]) == (1, "as deployed", 9)
    assert row["wer"] > 0 and row["wer"] == row["offline_wer"]
    assert row["agreement"] == {"identical": 9, "of": 9, "unit": "words", "rate": 1.0}
    # sent at the speed of speech: the run lasts at least as long as its longest utterance
    wall = row["rtf"] * row["audio_seconds"]
    assert wall >= max(d["seconds"] for d in row["details"]) - 0.02
    assert 0 < row["finalize_ms"]["p50"] <= row["finalize_ms"]["p90"]


def _table_rows(out: str) -> list[list[str]]:
    """The rows of the printed table (after its caption and header, before the worst lists)."""
    lines = out.split("\n\n")[0].splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["R", "chunk"])
    return [line.split() for line in lines[header + 1 :]]


def _utterance(key: str, text: str) -> Utterance:
    return Utterance(key, Path(key), text, key, duration=1.0, sample_rate=16000)


def _levenshtein(a, b) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]
