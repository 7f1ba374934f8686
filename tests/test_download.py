"""`nemotron-speech download` without network: verified files are reused, failures are one line.

The Hub cannot be reached from CI, so the Hub client's two calls are replaced where a download
has to succeed; the record, the verification and the command line are the real ones.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest

from nemotron_speech import cli, download
from nemotron_speech.llm.launcher import free_port

CLI = str(Path(sys.executable).parent / "nemotron-speech")
WEIGHTS = b"not really a model"


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def offline(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI with the Hub pointed at a port where nothing listens: no network."""
    return subprocess.run(
        [CLI, "download", *args],
        env={**os.environ, "HF_ENDPOINT": closed_url(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def unreachable(*args, **kwargs):
    raise ConnectionError("no network in this test")


def test_a_verified_download_is_reused_without_the_hub(tmp_path, monkeypatch, capsys):
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    remote = {download.ASR_FILE: download.RemoteFile(len(WEIGHTS), sha)}
    monkeypatch.setattr(download, "resolve", lambda repo: ("c0ffee" * 6, remote))

    def fake_download(repo, filename, revision, local_dir):
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / filename).write_bytes(WEIGHTS)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    path = download.download_asr(tmp_path, hashes=True)
    assert path.read_bytes() == WEIGHTS
    capsys.readouterr()

    monkeypatch.setattr(download, "resolve", unreachable)  # from now on, no network
    assert download.download_asr(tmp_path, hashes=True) == path
    assert "against its record of nvidia/nemotron-speech-streaming-en-0.6b@c0ffeec0ffee; Hub " \
           "not contacted" in capsys.readouterr().out  # fmt: skip
    path.write_bytes(WEIGHTS.upper())  # same size, other bytes: only the hash check sees it
    assert download.download_asr(tmp_path, hashes=False) == path
    with pytest.raises(ConnectionError):  # not verified any more: it must ask the Hub
        download.download_asr(tmp_path, hashes=True)


def test_the_command_works_offline_when_the_files_are_verified(tmp_path):
    target = download.asr_path(tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(WEIGHTS)
    remote = {download.ASR_FILE: download.RemoteFile(len(WEIGHTS), None)}
    download.write_record(target.parent, download.ASR_REPO, "0123456789abcdef", remote)
    done = offline("asr", "--models-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"ASR: {target}"


def test_no_network_is_one_line_naming_the_hub_and_the_fix(tmp_path):
    endpoint = closed_url()
    done = offline("asr", "--models-dir", str(tmp_path), HF_ENDPOINT=endpoint)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: Hugging Face Hub at {endpoint}: "), done.stderr
    assert "check the network" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_an_unreachable_tts_url_is_one_line(tmp_path, monkeypatch, capsys):
    url = f"{closed_url()}/kokoro-v1.0.onnx"
    monkeypatch.setitem(download.TTS_URLS, "kokoro-v1.0.onnx", url)
    assert cli.main(["download", "tts", "--models-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: cannot download {url}: ") and "run the command again" in error
    assert len(error.splitlines()) == 1, error


def test_magpie_and_its_codec_are_reused_offline_once_verified(tmp_path):
    model, codec = download.magpie_paths(tmp_path)
    for path, repo in ((model, download.MAGPIE_REPO), (codec, download.CODEC_REPO)):
        path.parent.mkdir(parents=True)
        path.write_bytes(WEIGHTS)
        remote = {path.name: download.RemoteFile(len(WEIGHTS), None)}
        download.write_record(path.parent, repo, "0123456789abcdef", remote)
    done = offline("magpie", "--models-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"Magpie TTS: {model}"
    codec.unlink()  # not verified any more: it must ask the Hub, which is unreachable
    done = offline("magpie", "--models-dir", str(tmp_path))
    assert done.returncode == 1 and "Hugging Face Hub" in done.stderr
