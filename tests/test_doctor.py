"""`nemotron-speech doctor` and the bot's start-up checks, against real parts where they can run.

Real: the ASR server on the test model, the fixture vLLM, files on disk, ports, espeak-ng, the bot
as a subprocess. Stand-in: `nvidia-smi` (no NVIDIA driver on CI machines) is a script printing
what the real one prints for the query the doctor sends: for a GB10 `[N/A]` memory (as quoted in
XuehaiPan/nvitop PR #208), for an H200 the numbers a real one printed (docs/spark.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from server_fixtures import TOKEN, stop_process

from nemotron_speech import download
from nemotron_speech.doctor import Options, machine, run_checks
from nemotron_speech.doctor.machine import gpu_checks, runs_on
from nemotron_speech.llm.launcher import free_port

ROOT = Path(__file__).resolve().parents[1]
BOT = ROOT / "pipelines" / "voice_bot.py"


def doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "nemotron_speech.cli", "doctor", *args],
        capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})},
    )  # fmt: skip


def lines(report: str) -> dict[str, str]:
    """check name -> its line (status first), from a rendered report."""
    found = {}
    for line in report.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("pass", "fail", "skip"):
            name = rest.strip().split("  ")[0]
            found[name] = line
    return found


def down_url(scheme: str) -> str:
    return f"{scheme}://127.0.0.1:{free_port()}"


# -- services down, ports, CLI -------------------------------------------------------------------


def test_down_servers_fail_with_the_url_and_how_to_start_them():
    asr, llm = down_url("ws"), down_url("http") + "/v1"
    result = doctor("--only", "asr,llm", "--asr-url", asr, "--llm-url", llm)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    found = lines(result.stdout)
    assert found["ASR server"].startswith("fail") and asr in found["ASR server"]
    assert "connection refused" in found["LLM server"] and llm in found["LLM server"]
    assert "up -d asr" in result.stdout and "nemotron-speech serve-llm" in result.stdout
    assert result.stdout.splitlines()[-1] == "2 failed, 0 passed, 0 skipped"


def test_a_port_held_by_another_program_fails_and_a_free_one_passes():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        # it accepts connections and never answers: the probe gives up after `timeout`
        options = Options(
            asr_url=f"ws://localhost:{port}", llm_url=down_url("http") + "/v1", timeout=1
        )
        checks = {c.name: c for c in run_checks(options, ["ports"])}
    assert checks[f"port {port}"].failed and "ss -ltnp" in checks[f"port {port}"].fix
    llm_port = int(options.llm_url.rsplit(":", 1)[1].split("/")[0])
    assert checks[f"port {llm_port}"].status == "pass"


def test_a_remote_service_port_is_skipped_not_tested():
    options = Options(asr_url="ws://gpu-box.invalid:8080", llm_url=down_url("http") + "/v1")
    checks = {c.name: c for c in run_checks(options, ["ports"])}
    assert checks["port 8080"].status == "skip" and "gpu-box.invalid" in checks["port 8080"].detail


def test_unknown_group_is_a_usage_error():
    result = doctor("--only", "gpu,nope")
    assert result.returncode == 2 and "unknown group(s) ['nope']" in result.stderr
    assert "Traceback" not in result.stderr


# -- weights and TTS on disk ---------------------------------------------------------------------


def test_missing_weights_name_the_download_commands(tmp_path):
    result = doctor("--only", "models,tts", "--models-dir", str(tmp_path), "--llm-variant", "fp8")
    assert result.returncode == 1
    found = lines(result.stdout)
    assert str(download.asr_path(tmp_path)) in found["ASR model"]
    assert "`nemotron-speech download llm --llm-variant fp8`" in result.stdout
    assert found["TTS"].startswith("fail") and "`nemotron-speech download tts`" in result.stdout


def make_llm_folder(folder: Path, shards: int = 2) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["NemotronHForCausalLM"]}')
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {f"layer{i}.weight": name for i, name in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for name in names:
        (folder / name).write_bytes(b"\x08" * 64)


def test_model_files_pass_only_when_complete_and_readable(tmp_path):
    options = Options(models_dir=str(tmp_path), llm_variant="nvfp4")
    asr = download.asr_path(tmp_path)
    asr.parent.mkdir(parents=True)
    asr.write_bytes(b"not a tar archive" * 100)  # e.g. an HTML error page saved as .nemo
    llm = download.llm_path(tmp_path, "nvfp4")
    make_llm_folder(llm)
    (llm / "model-00002-of-00002.safetensors").write_bytes(b"")  # interrupted copy
    checks = {c.name: c for c in run_checks(options, ["models"])}
    assert "not a .nemo archive" in checks["ASR model"].detail
    assert checks["LLM weights"].failed and "empty" in checks["LLM weights"].detail

    with tarfile.open(asr, "w") as archive:
        archive.add(__file__, arcname="model_config.yaml")
    (llm / "model-00002-of-00002.safetensors").write_bytes(b"\x08" * 64)
    checks = {c.name: c for c in run_checks(options, ["models"])}
    assert [checks["ASR model"].status, checks["LLM weights"].status] == ["pass", "pass"]
    assert "2 safetensors files" in checks["LLM weights"].detail

    (llm / "model-00001-of-00002.safetensors").unlink()
    assert "missing" in run_checks(options, ["models"])[1].detail


def write_kokoro(root: Path, voices: dict[str, np.ndarray]) -> None:
    tts = download.tts_dir(root)
    tts.mkdir(parents=True)
    (tts / "kokoro-v1.0.onnx").write_bytes(b"\x08\x07" * 32)
    np.savez(tts / "voices-v1.0.bin.npz", **voices)
    (tts / "voices-v1.0.bin.npz").rename(tts / "voices-v1.0.bin")


def test_kokoro_needs_its_weights_and_the_chosen_voice(tmp_path):
    write_kokoro(tmp_path, {"af_heart": np.zeros(4), "bf_emma": np.zeros(4)})
    (check,) = run_checks(Options(models_dir=str(tmp_path)), ["tts"])
    assert check.status == "pass" and "af_heart" in check.detail
    (check,) = run_checks(Options(models_dir=str(tmp_path), tts_voice="xx_nobody"), ["tts"])
    assert check.failed and "xx_nobody" in check.detail and "bf_emma" in check.fix
    (download.tts_dir(tmp_path) / "voices-v1.0.bin").write_bytes(b"<html>rate limited</html>")
    (check,) = run_checks(Options(models_dir=str(tmp_path)), ["tts"])
    assert check.failed and "not a voices archive" in check.detail


def test_a_host_without_pipecat_checks_only_the_tts_weights(tmp_path, monkeypatch):
    """On a Spark whose bot runs in its image the host has the download extra only: the TTS
    line checks the weights it provides, and the packages are the bot image's to check."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pipecat" else
        real_find_spec(name, *a),
    )  # fmt: skip
    (check,) = run_checks(Options(models_dir=str(tmp_path)), ["tts"])
    assert check.failed and "nemotron-speech download tts" in check.fix
    write_kokoro(tmp_path, {"af_heart": np.zeros(4)})
    (check,) = run_checks(Options(models_dir=str(tmp_path)), ["tts"])
    assert check.status == "pass" and "checked where the bot runs" in check.detail
    (check,) = run_checks(Options(tts="espeak"), ["tts"])
    assert check.status == "skip" and "no pipecat here" in check.detail


def test_espeak_tts_is_found_or_named(tmp_path):
    (check,) = run_checks(Options(tts="espeak"), ["tts"])
    assert check.status == "pass" and "espeak-ng" in check.detail
    result = doctor("--only", "tts", "--tts", "espeak", env={"PATH": str(tmp_path)})
    assert result.returncode == 1 and "apt-get install espeak-ng" in result.stdout


# -- GPU: nvidia-smi stand-in --------------------------------------------------------------------


def fake_nvidia_smi(monkeypatch, tmp_path, csv_line: str) -> None:
    """`nvidia-smi` printing `csv_line` for the doctor's --query-gpu (and failing otherwise)."""
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in --query-gpu=name,driver_version,compute_cap,memory.total,memory.free) ;;\n'
        '  *) echo "unexpected query $1" >&2; exit 2;; esac\n'
        f"echo '{csv_line}'\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")


def test_spark_gpu_reads_unified_memory_from_the_os(monkeypatch, tmp_path):
    fake_nvidia_smi(monkeypatch, tmp_path, "NVIDIA GB10, 580.95.05, 12.1, [N/A], [N/A]")
    driver, torch_line, capability, memory = gpu_checks(Options(), running={})
    assert driver.status == "pass" and "NVIDIA GB10: driver 580.95.05" in driver.detail
    assert capability.status == "pass" and "runs the nvfp4 checkpoint" in capability.detail
    assert "unified memory, /proc/meminfo" in memory.detail
    assert "vLLM 0.35 x total" in memory.detail and "ASR 8.0" in memory.detail
    # this box's torch is a CPU build: a GPU it cannot use is a failure with the fix
    assert torch_line.failed and "sees no CUDA device" in torch_line.detail


def test_memory_budget_counts_only_services_not_yet_running(monkeypatch, tmp_path):
    # an H200: 143,771 MiB total, 40,000 MiB free
    fake_nvidia_smi(monkeypatch, tmp_path, "NVIDIA H200, 580.65.06, 9.0, 143771, 40000")
    options = Options(target="x86")
    memory = gpu_checks(options, running={})[3]
    assert memory.failed and "needs 116.5 GB" in memory.detail  # 0.7 x 150.8 + 8 + 3
    memory = gpu_checks(options, running={"llm": True})[3]
    assert memory.status == "pass" and "vLLM" not in memory.detail


def test_magpie_adds_its_budget_to_the_bot_and_other_tts_do_not(monkeypatch, tmp_path):
    # an H200 with 13,000 MiB (13.6 GB) free, vLLM already running: ASR 8 + bot 3 fit, + Magpie not
    fake_nvidia_smi(monkeypatch, tmp_path, "NVIDIA H200, 580.65.06, 9.0, 143771, 13000")
    needs = {}
    for tts in ("kokoro", "espeak", "magpie"):
        memory = gpu_checks(Options(target="x86", tts=tts), running={"llm": True})[3]
        needs[tts] = (memory.status, float(memory.detail.split("needs ")[1].split(" GB")[0]))
        assert ("Magpie TTS 4.0" in memory.detail) == (tts == "magpie"), memory.detail
    assert needs["kokoro"] == needs["espeak"] == ("pass", 11.0)
    assert needs["magpie"] == ("fail", 15.0)
    # the bot already running holds Magpie's memory too
    memory = gpu_checks(Options(target="x86", tts="magpie"), running={"llm": True, "bot": True})[3]
    assert memory.status == "pass" and "Magpie" not in memory.detail and "ASR 8.0" in memory.detail


def test_magpie_budget_follows_the_h200_measurement_it_is_computed_from():
    # the activations term is the recorded run's batch-1 peak less that run's own fp32 weights
    run = json.loads((ROOT / "benchmarks" / "results" / "tts-h200.json").read_text())
    (row,) = [r for r in run["rows"] if (r["precision"], r["batch"], r["chunk"]) == ("fp32", 1, 8)]
    weights = (run["magpie_parameters"] + 31.6e6) * machine.FP32_BYTES / machine.GB
    activations = row["peak_memory_gib"] * 2**30 / machine.GB - weights
    assert pytest.approx(activations, abs=0.01) == machine.MAGPIE_ACTIVATIONS_GB
    assert 0 < activations < machine.MAGPIE_WEIGHTS_GB  # weights dominate one sentence's peak


def test_old_driver_and_old_gpu_fail_with_what_to_change(monkeypatch, tmp_path):
    fake_nvidia_smi(monkeypatch, tmp_path, "NVIDIA A10, 535.161.08, 8.6, 23028, 22000")
    driver, _, capability, _ = gpu_checks(Options(target="x86"), running={})
    assert driver.failed and "predates CUDA 13" in driver.detail and "VLLM_IMAGE" in driver.fix
    assert capability.failed and "fp8 checkpoint needs 8.9" in capability.detail
    assert capability.fix == "use --llm-variant bf16"


def test_no_driver_fails_once_and_skips_what_depends_on_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    statuses = [c.status for c in gpu_checks(Options(), running={})]
    assert statuses == ["fail", "skip", "skip", "skip"]


def test_torch_kernels_run_on_the_same_major_and_ptx_on_newer():
    assert runs_on(["sm_80", "sm_90", "sm_120"], (12, 1))  # sm_120 machine code runs on GB10
    assert not runs_on(["sm_80", "sm_90"], (12, 1))
    assert runs_on(["sm_90", "compute_90"], (12, 1))  # PTX is compiled by the driver
    assert runs_on(["sm_90a"], (9, 0)) and not runs_on(["sm_100"], (9, 0))


def test_versions_line_lists_the_stack_and_passes_here():
    (check,) = run_checks(Options(), ["versions"])
    assert check.status == "pass" and "pipecat-ai 1.14" in check.detail
    assert "vllm -" in check.detail  # vLLM runs in its own environment


# -- real ASR server and vLLM --------------------------------------------------------------------


@pytest.mark.slow
def test_running_servers_pass_and_hold_their_ports(token_asr_server, vllm_server):
    args = ["--only", "asr,llm,ports", "--asr-url", token_asr_server.url]
    args += ["--llm-url", vllm_server.base_url, "--llm-model", vllm_server.model]
    args += ["--port", str(free_port())]
    result = doctor(*args, env={"ASR_AUTH_TOKEN": TOKEN})
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result.stdout)
    assert "ready and warmed up" in found["ASR server"] and "right context 1" in found["ASR server"]
    assert f"serves {vllm_server.model} (vLLM 0.32" in found["LLM server"]
    assert "in use by the ASR server" in found[f"port {token_asr_server.port}"]
    assert "in use by vLLM" in found[f"port {vllm_server.spec.port}"]


@pytest.mark.slow
def test_wrong_token_and_wrong_model_name_fail_with_the_setting_to_change(
    token_asr_server, vllm_server
):
    options = Options(
        asr_url=token_asr_server.url, llm_url=vllm_server.base_url, llm_model="nemotron-3-nano"
    )
    asr, llm = run_checks(options, ["asr", "llm"])
    assert asr.failed and "401" in asr.detail and "ASR_AUTH_TOKEN" in asr.fix
    assert llm.failed and f"serves ['{vllm_server.model}']" in llm.detail
    assert f"NEMOTRON_LLM_MODEL to '{vllm_server.model}'" in llm.fix


# -- the bot refuses to start --------------------------------------------------------------------


def run_bot(*args: str, port: int = 0, env: dict | None = None, **popen) -> subprocess.Popen:
    """`pipelines/voice_bot.py -t webrtc` as a user starts it; output piped unless told."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **popen}
    return subprocess.Popen(
        [sys.executable, str(BOT), "-t", "webrtc", "--port", str(port or free_port()), *args],
        env={**os.environ, **(env or {})}, **popen,
    )  # fmt: skip


def test_bot_without_tts_weights_asr_or_llm_refuses_to_start(tmp_path):
    bot = run_bot(
        "--tts", "kokoro", "--models-dir", str(tmp_path),
        "--asr-url", down_url("ws"), "--llm-url", down_url("http") + "/v1",
    )  # fmt: skip
    output, _ = bot.communicate(timeout=120)
    assert bot.returncode == 1, output
    assert "Traceback" not in output
    found = lines(output)
    assert [found[n][:4] for n in ("TTS", "ASR server", "LLM server")] == ["fail"] * 3
    assert "nemotron-speech download tts" in output and "--skip-preflight" in output


def test_bot_starts_without_checks_when_told_to():
    port = free_port()
    bot = run_bot(
        "--tts", "espeak", "--asr-url", down_url("ws"), "--llm-url", down_url("http") + "/v1",
        port=port, env={"NEMOTRON_SKIP_PREFLIGHT": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/voice/", timeout=2).close()
                break
            except OSError:
                assert bot.poll() is None, "the bot exited although told to skip its checks"
                assert time.monotonic() < deadline, "the bot never served its page"
                time.sleep(0.3)
    finally:
        stop_process(bot, signal.SIGINT, timeout=20)


@pytest.mark.slow
def test_bot_with_its_asr_up_but_llm_down_refuses_to_start(token_asr_server):
    bot = run_bot(
        "--tts", "espeak", "--asr-url", token_asr_server.url, "--llm-url", down_url("http") + "/v1",
        env={"ASR_AUTH_TOKEN": TOKEN},
    )  # fmt: skip
    output, _ = bot.communicate(timeout=120)
    assert bot.returncode == 1 and "Traceback" not in output, output
    found = lines(output)
    assert found["ASR server"].startswith("pass") and found["LLM server"].startswith("fail")
    assert output.count("failed, ") == 1 and "1 failed, 2 passed, 0 skipped" in output
