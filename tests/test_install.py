"""The install paths the docs give work: extras that exist, no PyPI package that does not.

nemotron-speech is not on PyPI, so every `pip install` of it must be a clone's `.[extras]` or a
git URL (`nemotron-speech[extras] @ git+...`), and every extra named, ours or pipecat's, must exist
(pipecat 1.14 has no `local-smart-turn-v3`: pip only warns and installs without it). The slow test
runs README's clone path and the git-URL form in fresh venvs from a local copy of this repository.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nemotron_speech import __version__

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "models" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "docker").glob("Dockerfile*"))]
PIP_INSTALL = re.compile(r"pip install [^\n`]*")
OURS = re.compile(r"(nemotron-speech|(?<![\w/.-])\.)\[([\w,-]+)\]")  # nemotron-speech[x] or .[x]
PIPECAT = re.compile(r"pipecat-ai\[([\w,-]+)\]")


def our_extras() -> set[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


def pipecat_extras() -> set[str]:
    return set(importlib.metadata.metadata("pipecat-ai").get_all("Provides-Extra"))


def test_every_pip_install_in_docs_and_messages_can_succeed():
    ours, pipecats, problems = our_extras(), pipecat_extras(), []
    for path in DOCS + CODE:
        for command in PIP_INSTALL.findall(path.read_text()):
            where = f"{path.relative_to(ROOT)}: {command.strip()}"
            for match in OURS.finditer(command):
                if match[1] == "nemotron-speech" and not command[match.end() :].startswith(" @ "):
                    problems.append(f"{where}: not on PyPI; use .[extras] or '... @ git+URL'")
                problems += [f"{where}: no extra {e!r}" for e in match[2].split(",")
                             if e not in ours]  # fmt: skip
            for match in PIPECAT.finditer(command):
                problems += [f"{where}: pipecat has no extra {e!r}" for e in match[1].split(",")
                             if e not in pipecats]  # fmt: skip
    assert problems == []


def test_our_extras_ask_pipecat_only_for_extras_it_has():
    with open(ROOT / "pyproject.toml", "rb") as f:
        groups = tomllib.load(f)["project"]["optional-dependencies"]
    asked = {
        (group, extra)
        for group, requirements in groups.items()
        for requirement in requirements
        for match in PIPECAT.finditer(requirement)
        for extra in match[1].split(",")
    }
    assert {("bot", "kokoro"), ("bot", "silero"), ("bot", "webrtc")} <= asked  # the defaults
    assert {(group, extra) for group, extra in asked if extra not in pipecat_extras()} == set()


def test_download_sh_names_the_install_when_its_python_lacks_the_package(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "bare"], check=True)
    done = subprocess.run(
        [ROOT / "models" / "download.sh", "asr"],
        env={**os.environ, "NEMOTRON_PYTHON": str(tmp_path / "bare" / "bin" / "python")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "has no nemotron_speech; install it from this clone: python3 -m venv .venv && " \
           ".venv/bin/pip install -e '.[download]'" in done.stderr  # fmt: skip


def sh(command: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def install_in_the_clone(clone: Path) -> None:
    sh('python3 -m venv .venv && .venv/bin/pip install -q -e ".[download]"', clone)
    assert sh(".venv/bin/nemotron-speech --version", clone) == f"nemotron-speech {__version__}\n"
    assert sh("./models/download.sh --help", clone).startswith("usage: nemotron-speech download")
    no_torch = "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('nemo'))"
    assert sh(f'.venv/bin/python -c "{no_torch}"', clone) == "None None\n"


def install_from_the_git_url(clone: Path, folder: Path) -> None:
    # pip < 24 (Python 3.11's ensurepip has 23.2) rejects a host-less git+file URL; https is fine
    sh("python3 -m venv venv && venv/bin/pip install -q --upgrade pip", folder)
    sh(f'venv/bin/pip install -q "nemotron-speech[download] @ git+file://{clone}"', folder)
    assert sh("venv/bin/nemotron-speech --version", folder) == f"nemotron-speech {__version__}\n"
    license_of = (
        "import importlib.metadata as m; d = m.distribution('nemotron-speech'); "
        "print(d.metadata['License-Expression'], d.metadata.get_all('License-File'))"
    )
    assert sh(f'venv/bin/python -c "{license_of}"', folder) == "BSD-2-Clause ['LICENSE']\n"


@pytest.mark.slow
def test_clone_and_git_url_installs_give_the_cli_without_torch(tmp_path):
    """README's Install lines, run as written in a clone of this repository (HEAD).

    The two installs are independent (the git URL reads the clone's commits, not its work tree)
    and mostly wait on pip, so they run side by side: 41 s -> 22 s on 2 cores.
    """
    clone = tmp_path / "nemotron-speech"
    sh(f"git clone -q {ROOT} {clone}", tmp_path)
    with ThreadPoolExecutor(2) as pool:
        installs = [
            pool.submit(install_in_the_clone, clone),
            pool.submit(install_from_the_git_url, clone, tmp_path),
        ]
        for install in installs:
            install.result()  # re-raises the install's failed assertion
