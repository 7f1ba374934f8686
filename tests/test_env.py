"""`nemotron-speech --version`; `.env` files for the CLI and the pipelines, read as pipecat does."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from nemotron_speech import __version__, download

CLI = str(Path(sys.executable).parent / "nemotron-speech")


def test_version_is_the_installed_distributions():
    done = subprocess.run([CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"nemotron-speech {__version__}\n"
    assert importlib.metadata.version("nemotron-speech") == __version__


def clean_env(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def test_cli_reads_dotenv_from_the_working_directory(tmp_path):
    """NEMOTRON_MODELS_DIR from `.env` decides where `download` looks (offline: a verified
    record there answers without the Hub)."""
    models = tmp_path / "elsewhere"
    target = download.asr_path(models)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"weights")
    remote = {download.ASR_FILE: download.RemoteFile(7, None)}
    download.write_record(target.parent, download.ASR_REPO, "0123456789abcdef", remote)
    (tmp_path / ".env").write_text(f"NEMOTRON_MODELS_DIR={models}\n")
    done = subprocess.run(
        [CLI, "download", "asr"],
        cwd=tmp_path,
        env={**clean_env("NEMOTRON_MODELS_DIR"), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"ASR: {target}"


def test_pipelines_read_dotenv_and_it_wins_like_pipecats(tmp_path):
    (tmp_path / ".env").write_text("NEMOTRON_ASR_URL=ws://from-dotenv:8080\n")
    code = (
        "import argparse\n"
        "from nemotron_speech.voice_agent.config import add_arguments\n"
        "print(add_arguments(argparse.ArgumentParser()).parse_args([]).asr_url)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "NEMOTRON_ASR_URL": "ws://from-shell:8080"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ws://from-dotenv:8080\n"
