"""`nemotron-speech doctor`: can this machine run, or reach, every part of the voice agent?

Each check prints one line: `pass` with what it found, `fail` with the fix, or `skip` with why it
does not apply here (no GPU to ask, a service that runs on another host). Checks come in groups,
picked with --only / --skip:

    versions  installed versions of pipecat, NeMo, torch, vLLM... against this package's ranges
    gpu       NVIDIA driver, torch's CUDA (when torch is installed), capability, free memory
              against the Spark budget (docs/spark.md)
    models    ASR .nemo and LLM folder where `nemotron-speech download` puts them
    tts       the bot's TTS: kokoro-onnx and its weights, Magpie's checkpoints, or espeak-ng
    asr       the ASR server is ready (warmed up) and opens a stream
    llm       vLLM is up, serves the model, and answers a short completion (warming it up)
    ports     the stack's ports are free, or held by that service

The bundled bot runs the tts/asr/llm/ports checks before it serves (`voice_agent.preflight`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from nemotron_speech.doctor.core import Check, Options
from nemotron_speech.doctor.files import asr_model_check, llm_weights_check, tts_check
from nemotron_speech.doctor.machine import gpu_checks, versions_check
from nemotron_speech.doctor.services import Probes, asr_check, llm_check, port_checks

__all__ = ["GROUPS", "Check", "Options", "render", "run_checks"]

# group -> checks, in report order; each takes the options and the run's shared probes
GROUPS: dict[str, Callable[[Options, Probes], list[Check]]] = {
    "versions": lambda o, p: [versions_check()],
    "gpu": lambda o, p: gpu_checks(o, p.running()),
    "models": lambda o, p: [asr_model_check(o), llm_weights_check(o)],
    "tts": lambda o, p: [tts_check(o)],
    "asr": lambda o, p: [asr_check(o, p)],
    "llm": lambda o, p: [llm_check(o, p)],
    "ports": port_checks,
}


def run_checks(options: Options, groups: Iterable[str] = GROUPS) -> list[Check]:
    """Run the named groups (report order, not argument order) and return every line.

    A check that breaks unexpectedly becomes a failed line naming the exception, so a caller
    (the bot's start-up) always gets a report instead of a traceback.
    """
    probes = Probes(options)
    selected = set(groups)
    unknown = selected - GROUPS.keys()
    if unknown:
        raise ValueError(f"unknown check group(s) {sorted(unknown)}; choose from {list(GROUPS)}")
    checks: list[Check] = []
    for group, run in GROUPS.items():
        if group not in selected:
            continue
        try:
            checks += run(options, probes)
        except Exception as exc:  # noqa: BLE001 - reported as a failed line, see docstring
            checks.append(
                Check(group, "fail", f"the check itself failed: {exc!r}", "please report it")
            )
    return checks


def render(checks: list[Check]) -> str:
    """The report: one line per check, its fix indented below a failure, and a summary."""
    width = max((len(c.name) for c in checks), default=0) + 2
    lines = []
    for check in checks:
        lines.append(f"{check.status:<5} {check.name:<{width}}{check.detail}")
        if check.fix:
            lines.append(f"{'':<6}{'':<{width}}fix: {check.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "fail", "skip")}
    lines.append(f"{counts['fail']} failed, {counts['pass']} passed, {counts['skip']} skipped")
    return "\n".join(lines)
