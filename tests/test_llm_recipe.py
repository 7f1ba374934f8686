"""The vLLM recipe builds the command the docs promise, and the serve/download plumbing works.

Fast tests, no vLLM: the real server is exercised in test_vllm_fixture.py.
"""

from __future__ import annotations

import ast
import hashlib
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nemotron_speech import cli, download
from nemotron_speech.llm.launcher import ServerStartError, free_port, is_healthy, start_server
from nemotron_speech.llm.recipe import TARGETS, build_command

ROOT = Path(__file__).resolve().parents[1]
TESTING = "nemotron_speech.testing"


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_has_parsers_and_thinking_off_by_default(target):
    argv = build_command(target, "model-dir", port=8123).argv
    assert flag(argv, "--reasoning-parser") == "nemotron_v3"
    assert flag(argv, "--tool-call-parser") == "qwen3_coder"
    assert "--enable-auto-tool-choice" in argv
    assert json.loads(flag(argv, "--default-chat-template-kwargs")) == {"enable_thinking": False}
    assert flag(argv, "--port") == "8123"
    assert "--reasoning-parser-plugin" not in argv  # the deprecated nano_v3 plugin is not used


def test_spark_leaves_unified_memory_for_asr_and_tts():
    spec = build_command("spark", "m")
    assert spec.argv[:3] == ["vllm", "serve", "m"]
    assert float(flag(spec.argv, "--gpu-memory-utilization")) <= 0.4
    assert int(flag(spec.argv, "--max-model-len")) <= 16384
    assert spec.base_url == "http://127.0.0.1:8000/v1"
    assert spec.served_model_name == "nemotron-3-nano"


def test_cpu_fixture_uses_the_module_entry_point_and_eager_mode():
    spec = build_command("cpu-fixture", "/fx", python="/venv/bin/python", port=9000)
    assert spec.argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enforce-eager" in spec.argv
    assert spec.env == {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert spec.base_url == "http://127.0.0.1:9000/v1"


def test_unknown_target_is_rejected():
    with pytest.raises(ValueError, match="cpu-fixture"):
        build_command("tpu", "m")


def test_shell_line_round_trips():
    spec = build_command("x86", "/models/llm/x y")
    words = shlex.split(spec.shell())
    assert words == [f"{k}={v}" for k, v in sorted(spec.env.items())] + spec.argv


@pytest.mark.parametrize(("target", "variant"), [("spark", "nvfp4"), ("x86", "fp8")])
def test_dry_run_prints_the_command_documented_in_spark_md(capsys, target, variant):
    argv = ["serve-llm", "--target", target, "--models-dir", "/models", "--dry-run"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out.strip()
    model = download.llm_path(Path("/models"), variant)
    assert printed.startswith(f"vllm serve {model} ") or f" vllm serve {model} " in printed
    assert printed in (ROOT / "docs" / "spark.md").read_text()


def test_flags_after_double_dash_are_passed_to_vllm(capsys):
    argv = [
        "serve-llm",
        "--target",
        "spark",
        "--dry-run",
        "--",
        "--mamba-ssm-cache-dtype",
        "float32",
    ]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.split()[-2:] == ["--mamba-ssm-cache-dtype", "float32"]


def test_serve_llm_names_the_download_command_when_weights_are_missing(tmp_path, capsys):
    assert cli.main(["serve-llm", "--target", "x86", "--models-dir", str(tmp_path)]) == 2
    assert "nemotron-speech download llm --llm-variant fp8" in capsys.readouterr().err


def test_cpu_fixture_needs_the_vllm_python(monkeypatch, capsys):
    monkeypatch.delenv("NEMOTRON_VLLM_PYTHON", raising=False)
    assert cli.main(["serve-llm", "--target", "cpu-fixture", "--dry-run"]) == 2
    assert "setup_vllm.sh" in capsys.readouterr().err


def test_cpu_fixture_needs_the_model_built_by_the_tests(capsys):
    """serve-llm never builds the fixture: that is test code (`nemotron_speech.testing`)."""
    argv = ["serve-llm", "--target", "cpu-fixture", "--python", sys.executable, "--dry-run"]
    assert cli.main(argv) == 2
    assert "python -m nemotron_speech.testing.fixture_llm OUT_DIR" in capsys.readouterr().err
    assert cli.main([*argv, "--model", "/fixture"]) == 0
    assert " --model /fixture " in capsys.readouterr().out


def test_production_code_imports_no_test_module():
    """`nemotron_speech.testing` holds test fixtures; only tests, benchmarks and the test-model
    builders themselves import it."""
    package = ROOT / "src" / "nemotron_speech"
    importers = [
        f"{path.relative_to(package)}:{node.lineno}"
        for path in package.rglob("*.py")
        if path.parent.name != "testing"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith(TESTING)
        or isinstance(node, ast.Import)
        and any(a.name.startswith(TESTING) for a in node.names)
    ]
    assert importers == []


def test_cli_modules_import_no_heavy_libraries():
    code = (
        "import sys, nemotron_speech.cli as c; c.build_parser(); "
        "heavy = {'torch', 'vllm', 'huggingface_hub', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_start_server_waits_for_health_and_stops(tmp_path):
    (tmp_path / "health").write_text("ok")
    port = free_port()
    spec = build_command("cpu-fixture", "unused", port=port)
    spec.argv[:] = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "-b",
        "127.0.0.1",
        "-d",
        str(tmp_path),
    ]
    server = start_server(spec, log_path=tmp_path / "log", timeout=30, warm=False)
    assert server.process.poll() is None and is_healthy(spec.base_url)  # returned once healthy
    server.stop()
    assert server.process.poll() is not None


def test_a_server_that_cannot_complete_is_not_reported_ready(tmp_path):
    """Healthy is not enough: the warm-up completion must be answered (http.server has no POST)."""
    (tmp_path / "health").write_text("ok")
    port = free_port()
    spec = build_command("cpu-fixture", "unused", port=port)
    spec.argv[:] = [sys.executable, "-m", "http.server", str(port), "-b", "127.0.0.1", "-d"]
    spec.argv.append(str(tmp_path))
    with pytest.raises(ServerStartError, match=r"warm-up failed: .*/v1/chat/completions.* 501"):
        start_server(spec, log_path=tmp_path / "log", timeout=30)
    assert not is_healthy(f"http://127.0.0.1:{port}/v1")  # stopped, not left running


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_the_process_that_started_it(tmp_path):
    """A killed test run or CLI must not leave a vLLM behind (it holds GBs and a port)."""
    (tmp_path / "health").write_text("ok")
    port = free_port()
    parent = (
        "import os, sys; from nemotron_speech.llm.recipe import build_command; "
        "from nemotron_speech.llm.launcher import start_server; "
        f"spec = build_command('cpu-fixture', 'x', port={port}); "
        f"spec.argv[:] = [sys.executable, '-m', 'http.server', '{port}', '-b', '127.0.0.1', "
        f"'-d', {str(tmp_path)!r}]; "
        f"start_server(spec, log_path=__import__('pathlib').Path({str(tmp_path / 'log')!r}), "
        "warm=False); "
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", parent], check=True, timeout=60)
    deadline = time.monotonic() + 10
    while is_healthy(f"http://127.0.0.1:{port}/v1"):
        assert time.monotonic() < deadline, "server outlived its parent"
        time.sleep(0.2)


def test_start_server_reports_an_early_exit_with_the_log(tmp_path):
    spec = build_command("cpu-fixture", "unused", port=free_port())
    spec.argv[:] = [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]
    with pytest.raises(ServerStartError, match=r"(?s)code 3.*boom"):
        start_server(spec, log_path=tmp_path / "log", timeout=30)


def test_verify_reports_missing_short_and_corrupt_files(tmp_path):
    (tmp_path / "good.bin").write_bytes(b"abc")
    (tmp_path / "short.bin").write_bytes(b"ab")
    (tmp_path / "bad.bin").write_bytes(b"xyz")
    sha = hashlib.sha256(b"abc").hexdigest()
    manifest = {
        "good.bin": download.RemoteFile(3, sha),
        "short.bin": download.RemoteFile(3, None),
        "bad.bin": download.RemoteFile(3, sha),
        "gone.json": download.RemoteFile(10, None),
    }
    assert download.verify(tmp_path, manifest, hashes=False) == [
        "gone.json: missing",
        "short.bin: 2 bytes, expected 3",
    ]
    problems = download.verify(tmp_path, manifest, hashes=True)
    assert "bad.bin: sha256 differs from the Hub's" in problems and len(problems) == 3


def test_require_weights_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("`nemotron-speech download asr`")):
        download.require_weights(download.asr_path(tmp_path), "asr")


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD with HTTP Range support, like a release-asset CDN."""

    PAYLOAD = bytes(range(256)) * 40

    def do_GET(self):  # noqa: N802 - http.server's naming
        start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-"))[1])
        body = self.PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_fetch_url_resumes_a_partial_download(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dest = tmp_path / "voices.bin"
    dest.with_name("voices.bin.part").write_bytes(RangeHandler.PAYLOAD[:1000])
    try:
        download.fetch_url(f"http://127.0.0.1:{server.server_port}/voices.bin", dest)
    finally:
        server.shutdown()
    assert dest.read_bytes() == RangeHandler.PAYLOAD


def test_download_llm_checks_the_snapshot_against_the_hub(tmp_path, monkeypatch):
    """Offline: the Hub calls are replaced; the download-then-verify flow and layout are real."""
    import huggingface_hub

    manifest = {
        "config.json": download.RemoteFile(2, None),
        "model.safetensors": download.RemoteFile(4, None),
    }
    monkeypatch.setattr(download, "resolve", lambda repo: ("abc123", manifest))
    calls = []

    def fake_snapshot(repo, revision, local_dir):
        calls.append((repo, revision))
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "config.json").write_text("{}")
        (Path(local_dir) / "model.safetensors").write_bytes(b"abc")  # one byte short

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    with pytest.raises(OSError, match="model.safetensors: 3 bytes, expected 4"):
        download.download_llm(tmp_path, "fp8", hashes=False)
    assert calls == [("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-FP8", "abc123")]
    (download.llm_path(tmp_path, "fp8") / "model.safetensors").write_bytes(b"abcd")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: None)
    assert download.download_llm(tmp_path, "fp8", hashes=True) == download.llm_path(tmp_path, "fp8")
