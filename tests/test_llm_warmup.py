"""vLLM starts fast the second time and answers the first turn fast.

- the GPU recipes turn on prefix caching in the Mamba "align" mode, and vLLM 0.32's own argument
  parser accepts every GPU target's flags (and rejects the removed "all" mode);
- compose keeps the compile caches on a named volume, and the paths it sets are where vLLM 0.32
  and Triton look;
- compose's llm health check is a real completion, the same request `serve-llm` warms up with, and
  it passes against the fixture vLLM and fails against a port where nothing listens.
`serve-llm`'s warm-up itself runs in test_vllm_fixture.py (the CLI test) and in every session's
fixture server (`start_server`).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
from test_docker_files import compose
from tools import unavailable
from vllm_server import VLLM_PYTHON_ENV

from nemotron_speech.endpoints import LLM_MODEL, LLM_PORT
from nemotron_speech.llm.launcher import WARMUP_REQUEST, free_port
from nemotron_speech.llm.recipe import build_command

CACHE_VARIABLES = (
    "XDG_CACHE_HOME",
    "VLLM_CACHE_ROOT",
    "TRITON_CACHE_DIR",
    "FLASHINFER_WORKSPACE_BASE",
    "TVM_FFI_CACHE_DIR",
    "CUDA_CACHE_PATH",
)
# Run by the vLLM venv's python: parse each argv with vLLM's OpenAI-server parser (None when it
# refuses one), and resolve the cache folders under the environment the caller passes.
PARSE = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
import vllm.envs
from triton import knobs
keys = ("enable_prefix_caching", "mamba_cache_mode", "kv_cache_dtype", "moe_backend")
out = {"vllm_cache_root": vllm.envs.VLLM_CACHE_ROOT, "triton_cache": knobs.cache.dir}
for name, argv in json.loads(sys.argv[1]).items():
    try:
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    except SystemExit:
        out[name] = None
        continue
    out[name] = {k: getattr(args, k) for k in keys}
print(json.dumps(out))
"""


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def llm_service() -> dict:
    return compose("compose.yaml")["services"]["llm"]


def test_gpu_targets_cache_prefixes_in_align_mode_and_the_fixture_does_not():
    for target in ("spark", "x86"):
        argv = build_command(target, "m").argv
        assert "--enable-prefix-caching" in argv and flag(argv, "--mamba-cache-mode") == "align"
    # no Mamba layers: vLLM 0.32 then reports healthy and fails every request (seen)
    assert "--mamba-cache-mode" not in build_command("cpu-fixture", "m").argv


def test_vllm_accepts_the_gpu_flags_and_finds_the_compose_cache_paths():
    python = os.environ.get(VLLM_PYTHON_ENV)
    if not python:
        unavailable(f"{VLLM_PYTHON_ENV} is unset: create the vLLM venv with .ci/setup_vllm.sh")
    argvs = {}
    for target in ("spark", "x86"):
        argv = build_command(target, "/models/m").argv
        assert argv[:2] == ["vllm", "serve"]
        argvs[target] = ["--model", *argv[2:]]  # `vllm serve MODEL` = the server's --model
    argvs["removed mode"] = [a.replace("align", "all") for a in argvs["spark"]]
    env = {**os.environ, **llm_service()["environment"]}
    result = subprocess.run(
        [python, "-c", PARSE, json.dumps(argvs)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["spark"] == {
        "enable_prefix_caching": True,
        "mamba_cache_mode": "align",
        "kv_cache_dtype": "fp8",
        "moe_backend": "flashinfer_cutlass",
    }
    assert out["x86"]["mamba_cache_mode"] == "align" and out["x86"]["enable_prefix_caching"]
    assert out["removed mode"] is None
    assert (out["vllm_cache_root"], out["triton_cache"]) == ("/cache/vllm", "/cache/triton")


def test_compile_caches_live_on_a_named_volume():
    base = compose("compose.yaml")
    llm = base["services"]["llm"]
    (mount,) = [v.split(":")[1] for v in llm["volumes"] if v.split(":")[0] == "vllm-cache"]
    assert "vllm-cache" in base["volumes"]
    for name in CACHE_VARIABLES:
        assert llm["environment"][name].startswith(mount), name


def health_check_code() -> str:
    test = llm_service()["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python3", "-c"]
    return test[3]


def test_health_check_sends_the_warm_up_request():
    code = health_check_code()
    call = next(
        node
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "dumps"
    )
    assert ast.literal_eval(call.args[0]) == {"model": LLM_MODEL, **WARMUP_REQUEST}
    assert f"http://127.0.0.1:{LLM_PORT}/v1/chat/completions" in code


@pytest.mark.slow
def test_health_check_passes_on_a_serving_vllm_and_fails_where_none_listens(vllm_server):
    code = health_check_code().replace(LLM_MODEL, vllm_server.model)

    def run(base_url: str) -> subprocess.CompletedProcess:
        script = code.replace(f"http://127.0.0.1:{LLM_PORT}/v1", base_url)
        return subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )

    served = run(vllm_server.base_url)
    assert served.returncode == 0, served.stderr
    down = run(f"http://127.0.0.1:{free_port()}/v1")
    assert down.returncode != 0 and "Connection refused" in down.stderr
