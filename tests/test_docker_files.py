"""The Docker files in docker/ are consistent with the code and pass the linters we can run here.

What is checked, honestly (no Docker engine on CI machines, so nothing is built or started):
- always: the Compose files parse (PyYAML) and have the structure the design needs (GPU
  reservations, health checks, start order, model volume), the llm commands equal the serve-llm
  recipe, model paths match `nemotron_speech.download`, HAProxy's servers match the compose
  services;
- with NEMOTRON_LINT_TOOLS (from .ci/setup_lint_tools.sh): hadolint on the Dockerfiles, dclint on
  the Compose files (YAML + compose-spec JSON-schema validation + best-practice rules), and
  `haproxy -c` on the HAProxy config;
- `docker compose config` only where the compose plugin exists (it does not on CI machines).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from tools import unavailable

from nemotron_speech import download
from nemotron_speech.endpoints import ASR_URL, LLM_MODEL, LLM_URL
from nemotron_speech.llm.recipe import build_command
from nemotron_speech.server import __main__ as server_main
from nemotron_speech.voice_agent import access, config

DOCKER = Path(__file__).resolve().parents[1] / "docker"
MODELS = Path("/models")
COMPOSE_FILES = ["compose.yaml", "compose.x86.yaml", "compose.scale.yaml", "compose.magpie.yaml"]
LINT_ENV = "NEMOTRON_LINT_TOOLS"


class ComposeLoader(yaml.SafeLoader):
    """SafeLoader that also reads Compose's `!reset` / `!override` merge tags."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)
ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node))


def compose(name: str) -> dict:
    return yaml.load((DOCKER / name).read_text(), Loader=ComposeLoader)


def lint_tool(relative: str) -> str:
    root = os.environ.get(LINT_ENV)
    if not root:
        unavailable(f"{LINT_ENV} is unset: install the linters with .ci/setup_lint_tools.sh")
    path = Path(root) / relative
    assert path.exists(), f"{path} missing: rerun .ci/setup_lint_tools.sh {root}"
    return str(path)


def test_llm_command_is_the_spark_recipe():
    llm = compose("compose.yaml")["services"]["llm"]
    spec = build_command("spark", str(download.llm_path(MODELS, "nvfp4")))
    assert llm["command"] == spec.argv
    assert not spec.env
    assert llm["image"].startswith("${VLLM_IMAGE:-nvcr.io/nvidia/vllm:")


def test_x86_override_is_the_x86_recipe():
    llm = compose("compose.x86.yaml")["services"]["llm"]
    spec = build_command("x86", str(download.llm_path(MODELS, "fp8")))
    assert llm["command"] == spec.argv
    assert llm["environment"] == spec.env


def test_services_have_gpus_health_checks_and_start_order():
    services = compose("compose.yaml")["services"]
    for name in ("llm", "asr"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert any(v.endswith(":/models:ro") for v in service["volumes"]), name
    assert services["asr"]["depends_on"] == {"llm": {"condition": "service_healthy"}}
    assert services["bot"]["depends_on"] == {
        "asr": {"condition": "service_healthy"},
        "llm": {"condition": "service_healthy"},
    }
    assert services["bot"]["environment"]["NEMOTRON_LLM_MODEL"] == LLM_MODEL


def test_asr_model_path_matches_download_layout_and_dockerfile():
    asr = compose("compose.yaml")["services"]["asr"]
    model = str(download.asr_path(MODELS))
    assert asr["command"][asr["command"].index("--model") + 1] == model
    dockerfile = (DOCKER / "Dockerfile.asr").read_text()
    assert f'"{model}"' in dockerfile
    assert re.search(r"^ARG BASE_IMAGE=nvcr\.io/nvidia/pytorch:\S+$", dockerfile, re.M)


def test_haproxy_servers_are_the_scale_out_services():
    services = compose("compose.scale.yaml")["services"]
    servers = re.findall(r"^\s*server \S+ (\S+):8080", (DOCKER / "haproxy.cfg").read_text(), re.M)
    assert servers == ["asr", "asr-2"]
    assert "asr-2" in services
    # the bot is on the host's network: it reaches the balancer where it is published
    assert (
        services["bot"]["environment"]["NEMOTRON_ASR_URL"]
        == f"ws://{published(services['asr-lb'])}"
    )


def published(service: dict) -> str:
    """`localhost:port` where a service's single port is published on the host's loopback."""
    (mapping,) = service["ports"]
    host, port, _ = mapping.split(":")
    assert host == "127.0.0.1", mapping
    return f"localhost:{port}"


def test_bot_is_on_the_host_network_and_on_loopback_unless_told():
    """WebRTC media needs the host's addresses; the page stays on loopback by default."""
    services = compose("compose.yaml")["services"]
    bot = services["bot"]
    assert bot["network_mode"] == "host" and "ports" not in bot
    host = bot["command"][bot["command"].index("--host") + 1]
    default = host.removeprefix("${BOT_HOST:-")[:-1]
    assert host.startswith("${BOT_HOST:-") and access.is_loopback(default)
    assert host in bot["healthcheck"]["test"][-1]  # the health check connects where it listens
    env = bot["environment"]
    assert env["NEMOTRON_ASR_URL"] == f"ws://{published(services['asr'])}"
    assert env["NEMOTRON_LLM_URL"] == f"http://{published(services['llm'])}/v1"
    # published where every client's default dials
    assert (env["NEMOTRON_ASR_URL"], env["NEMOTRON_LLM_URL"]) == (ASR_URL, LLM_URL)


def test_hadolint_passes():
    hadolint = lint_tool("venv/bin/hadolint")
    dockerfiles = sorted(str(p) for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")
    assert len(dockerfiles) == 2
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), *dockerfiles],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dclint_validates_compose_schema_and_rules():
    dclint = lint_tool("node_modules/.bin/dclint")
    result = subprocess.run(
        [dclint, "--color", "false", "-c", ".dclintrc", "--max-warnings", "0", *COMPOSE_FILES],
        capture_output=True,
        text=True,
        cwd=DOCKER,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_haproxy_config_is_valid():
    lint_tool("")  # haproxy comes from the same setup script
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    result = subprocess.run(
        [haproxy, "-c", "-f", str(DOCKER / "haproxy.cfg")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bot_environment_names_are_ones_the_bot_reads(monkeypatch):
    """Every NEMOTRON_* variable compose sets reaches a bot flag through its env default."""
    env = compose("compose.yaml")["services"]["bot"]["environment"]
    env = {name: value for name, value in env.items() if name.startswith("NEMOTRON_")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = access.add_access_arguments(config.add_arguments(argparse.ArgumentParser()))
    args = parser.parse_args([])
    for name, value in env.items():
        assert str(getattr(args, name.removeprefix("NEMOTRON_").lower())) == value, name


def test_asr_command_parses_with_the_server_cli_and_matches_haproxy_cap():
    asr = compose("compose.yaml")["services"]["asr"]
    assert asr["command"][:3] == ["python", "-m", "nemotron_speech.server"]
    args = server_main.build_parser().parse_args(asr["command"][3:])
    assert (args.host, args.port, args.device, args.right_context) == ("0.0.0.0", 8080, "cuda", 1)
    cap = re.search(r"default-server .*maxconn (\d+)", (DOCKER / "haproxy.cfg").read_text())
    assert int(cap[1]) == args.max_streams
