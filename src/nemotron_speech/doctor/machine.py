"""Checks of this machine: NVIDIA driver, torch's CUDA, capability, memory budget, versions.

The driver is read through `nvidia-smi`, so the GPU checks work without torch; torch is imported
only for its own line, and only when it is installed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass

from nemotron_speech.doctor.core import Check, Options, fail, host_port, is_local, ok, skip
from nemotron_speech.llm.recipe import TARGETS

GB = 1e9
# What the checkpoints need natively (download.py's --llm-variant help: NVFP4 for Blackwell,
# FP8 for Hopper/Ada); bf16 tensor cores start with Ampere.
MIN_CAPABILITY = {"nvfp4": (10, 0), "fp8": (8, 9), "bf16": (8, 0)}
# The NGC 26.05 images docker/ uses are CUDA 13 builds; CUDA 13.0 needs driver 580 or newer.
MIN_DRIVER = 580
# docs/spark.md's memory budget, upper ends: ASR 0.6B (8.3 GB at 256 streams, measured on an
# H200), bot with Kokoro on the CPU (2-3 GB). vLLM's share comes from the recipe's flag.
ASR_BUDGET_GB = 8.0
BOT_BUDGET_GB = 3.0
# --tts magpie adds Magpie to the bot's process (docs/spark.md, Memory budget). Computed, not
# measured on a Spark (no checkpoint can be loaded here):
# - weights, fp32 (the checkpoint's and the engine's precision; bf16 was slower on an H200): the
#   published 357 M plus the codec, taken as twice the 31.6 M of the NanoCodec-sized decoder
#   benchmarks.tts builds (the real codec keeps its encoder; Magpie drops only its discriminator);
# - one request's activations and KV cache (the bot's engine is shared under a lock, so batch 1):
#   the H200 peak at batch 1 (1.50 GiB, benchmarks/results/tts-h200.json) less that run's own
#   random-weight weights (253.1 M + 31.6 M, fp32);
# - runtime: torch and NeMo in the bot's process, 0.87 GB peak RSS measured on the CPU with the test
#   model (imports, load, one sentence), plus 1 GB assumed for the CUDA context and kernels.
FP32_BYTES = 4
MAGPIE_WEIGHTS_GB = (357e6 + 2 * 31.6e6) * FP32_BYTES / GB
MAGPIE_ACTIVATIONS_GB = 1.50 * 2**30 / GB - (253.1e6 + 31.6e6) * FP32_BYTES / GB
MAGPIE_RUNTIME_GB = 0.87 + 1.0
MAGPIE_BUDGET_GB = MAGPIE_WEIGHTS_GB + MAGPIE_ACTIVATIONS_GB + MAGPIE_RUNTIME_GB  # 4.0
PACKAGES = (
    "nemotron-speech",
    "pipecat-ai",
    "nemo_toolkit",
    "torch",
    "vllm",
    "kokoro-onnx",
    "onnxruntime",
    "websockets",
)
NO_GPU = "no NVIDIA GPU found (see the GPU driver line)"


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it; memory is None where it reports N/A (unified memory)."""

    name: str
    driver: str
    capability: tuple[int, int] | None
    total_bytes: float | None
    free_bytes: float | None


def query_gpus() -> list[Gpu] | str:
    """The GPUs, or why they cannot be listed."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "nvidia-smi not found: no NVIDIA driver on this machine (or not on PATH)"
    fields = "name,driver_version,compute_cap,memory.total,memory.free"
    try:
        result = subprocess.run(
            [smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    if result.returncode != 0:
        return f"nvidia-smi failed: {(result.stdout + result.stderr).strip()[:300]}"
    gpus = []
    for line in result.stdout.strip().splitlines():
        name, driver, cap, total, free = (v.strip() for v in line.split(","))
        gpus.append(Gpu(name, driver, _capability(cap), _mib(total), _mib(free)))
    return gpus or "nvidia-smi lists no GPU"


def _capability(text: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def _mib(text: str) -> float | None:
    try:
        return float(text) * 2**20
    except ValueError:  # "[N/A]": GB10's unified memory has no separate GPU memory to report
        return None


def driver_check(gpus: list[Gpu] | str) -> Check:
    name = "GPU driver"
    if isinstance(gpus, str):
        return fail(
            name,
            gpus,
            "install the NVIDIA driver (DGX OS ships it); on a machine without a GPU that only "
            "talks to remote servers, leave the GPU checks out: --skip gpu,models",
        )
    gpu = gpus[0]
    listed = ", ".join(g.name for g in gpus)
    major = int(gpu.driver.split(".")[0]) if gpu.driver.split(".")[0].isdigit() else 0
    if major < MIN_DRIVER:
        return fail(
            name,
            f"{listed}: driver {gpu.driver} predates CUDA 13, which the NGC 26.05 images need",
            f"update the driver to {MIN_DRIVER} or newer, or set VLLM_IMAGE and ASR_BASE_IMAGE "
            "to NGC tags built for this driver (docker/compose.x86.yaml)",
        )
    return ok(name, f"{listed}: driver {gpu.driver}")


def capability_check(gpus: list[Gpu] | str, options: Options) -> Check:
    name = "CUDA capability"
    if isinstance(gpus, str):
        return skip(name, NO_GPU)
    cap, variant = gpus[0].capability, options.variant
    if cap is None:
        return fail(name, "nvidia-smi does not report it", "update the NVIDIA driver")
    need = MIN_CAPABILITY[variant]
    text = f"{cap[0]}.{cap[1]}"
    if cap < need:
        better = [v for v, c in MIN_CAPABILITY.items() if cap >= c]
        fix = f"use --llm-variant {better[0]}" if better else "the LLM needs a newer GPU"
        return fail(
            name, f"{text}: the {variant} checkpoint needs {need[0]}.{need[1]} or newer", fix
        )
    return ok(name, f"{text}: runs the {variant} checkpoint (needs {need[0]}.{need[1]}+)")


def torch_check(gpus: list[Gpu] | str) -> Check:
    name = "torch CUDA"
    if importlib.util.find_spec("torch") is None:
        return skip(name, "torch is not installed here (only the ASR server needs it)")
    if isinstance(gpus, str):  # and importing torch would only take seconds to say the same
        return skip(name, NO_GPU)
    import torch

    version = torch.__version__
    if not torch.cuda.is_available():
        return fail(
            name,
            f"torch {version} sees no CUDA device (built for CUDA {torch.version.cuda})",
            "install a CUDA build of torch into this environment, or run the ASR server in "
            "its container (docker/Dockerfile.asr)",
        )
    cap = torch.cuda.get_device_capability(0)
    archs = torch.cuda.get_arch_list()
    if not runs_on(archs, cap):
        return fail(
            name,
            f"torch {version} has kernels for {' '.join(archs)}, none for sm_{cap[0]}{cap[1]}",
            "use NVIDIA's PyTorch container (nvcr.io/nvidia/pytorch, what docker/Dockerfile.asr "
            "builds on) or a torch build with this GPU's architecture",
        )
    device = torch.cuda.get_device_name(0)
    return ok(name, f"torch {version} (CUDA {torch.version.cuda}) runs on {device}")


def runs_on(archs: list[str], cap: tuple[int, int]) -> bool:
    """Whether any of torch's compiled architectures runs on a GPU of capability `cap`: machine
    code (sm_XY) runs on the same major version with an equal or higher minor; PTX (compute_XY)
    is compiled by the driver for any newer GPU."""
    for arch in archs:
        match = re.fullmatch(r"(sm|compute)_(\d+?)(\d)[a-z]?", arch)
        if not match:
            continue
        built = (int(match[2]), int(match[3]))
        if (match[1] == "sm" and built[0] == cap[0] and built[1] <= cap[1]) or (
            match[1] == "compute" and built <= cap
        ):
            return True
    return False


def memory_check(gpus: list[Gpu] | str, options: Options, running: dict[str, bool]) -> Check:
    """Free memory against what the services that are not running yet will take.

    `running` says which of "llm", "asr", "bot" already run here (their memory is taken). The
    bot's share depends on its TTS: Magpie runs in the bot's process, Kokoro and espeak take only
    CPU memory already in the bot's budget. Like the ASR's, Magpie's share is counted whatever its
    device (on the Spark's unified memory the CPU's memory is the GPU's).
    """
    name = "memory"
    if isinstance(gpus, str):
        return skip(name, NO_GPU)
    total, free, where = _memory(gpus[0])
    fraction = float(_flag(TARGETS[options.target].flags, "--gpu-memory-utilization"))
    budgets = [  # (service, label, bytes, whether it runs on this machine)
        ("llm", f"vLLM {fraction:g} x total", fraction * total, is_local_url(options.llm_url)),
        (
            "asr",
            "ASR",
            ASR_BUDGET_GB * GB,
            bool(options.asr_model) or is_local_url(options.asr_url),
        ),
        ("bot", "bot", BOT_BUDGET_GB * GB, True),
        ("bot", "Magpie TTS", MAGPIE_BUDGET_GB * GB, options.tts == "magpie"),
    ]
    needs = {label: size for key, label, size, here in budgets if here and not running.get(key)}
    have = f"{free / GB:.1f} GB free of {total / GB:.1f} GB ({where})"
    if not needs:
        return ok(name, f"{have}; the services already run")
    need = sum(needs.values())
    parts = ", ".join(f"{k} {v / GB:.1f}" for k, v in needs.items())
    if free < need:
        return fail(
            name,
            f"{have}; needs {need / GB:.1f} GB ({parts})",
            "stop other programs that hold GPU memory (nvidia-smi lists them), or lower vLLM's "
            "--gpu-memory-utilization (docs/spark.md, Memory budget)",
        )
    return ok(name, f"{have}; needs {need / GB:.1f} GB ({parts})")


def is_local_url(url: str) -> bool:
    return is_local(host_port(url, 80)[0])


def _memory(gpu: Gpu) -> tuple[float, float, str]:
    """(total, free, source): the GPU's own memory, or on unified memory (GB10) the system's."""
    if gpu.total_bytes is not None and gpu.free_bytes is not None:
        return gpu.total_bytes, gpu.free_bytes, "GPU memory"
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = float(value.split()[0]) * 1024
    return info["MemTotal"], info["MemAvailable"], "unified memory, /proc/meminfo"


def _flag(flags: tuple[str, ...], name: str) -> str:
    return flags[flags.index(name) + 1]


def gpu_checks(options: Options, running: dict[str, bool]) -> list[Check]:
    gpus = query_gpus()
    return [
        driver_check(gpus),
        torch_check(gpus),
        capability_check(gpus, options),
        memory_check(gpus, options, running),
    ]


def versions_check() -> Check:
    """Installed versions of the stack; fails only when one breaks this package's requirements."""
    name = "versions"
    found, problems = [], []
    wanted = _requirements()
    for package in PACKAGES:
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} -")
            continue
        found.append(f"{package} {version}")
        spec = wanted.get(package.lower().replace("_", "-"))
        if spec is not None and not spec.contains(version, prereleases=True):
            problems.append(f"{package} {version} does not meet {spec}")
    detail = ", ".join(found) + " (- = not installed here)"
    if problems:
        return fail(name, "; ".join(problems), "reinstall the project's extras in this environment")
    return ok(name, detail)


def _requirements() -> dict:
    """This package's declared version ranges, by normalised name (empty without `packaging`)."""
    try:
        from packaging.requirements import Requirement

        requires = importlib.metadata.requires("nemotron-speech") or []
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return {}
    ranges = {}
    for line in requires:
        requirement = Requirement(line)
        if requirement.specifier:
            ranges[requirement.name.lower().replace("_", "-")] = requirement.specifier
    return ranges
