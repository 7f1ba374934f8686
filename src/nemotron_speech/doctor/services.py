"""Checks of the running services: the ASR server, vLLM, and the ports the stack binds.

"Healthy" means more than a listening port. The ASR server answers `/health` 200 only once its
model is loaded and warmed up, and the check then opens a real stream (which also proves the
token). vLLM must answer `/health`, list the model the bot asks for, and answer a short chat
completion, which warms it up as `serve-llm` and the compose health check do.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from functools import cached_property

from nemotron_speech.doctor.core import (
    Check,
    Options,
    Unreachable,
    fail,
    host_port,
    http_request,
    http_root,
    is_local,
    ok,
    skip,
)
from nemotron_speech.endpoints import ASR_PORT, LLM_PORT
from nemotron_speech.llm.launcher import WarmupError, warm_up

ASR_STATES = ("loading", "ready", "stopping")  # what the ASR server's /health reports
START_ASR = (
    "start it (`docker compose -f docker/compose.yaml up -d asr`, or `python -m "
    "nemotron_speech.server --model MODEL.nemo`), or point --asr-url / NEMOTRON_ASR_URL at it"
)
START_LLM = (
    "start it (`docker compose -f docker/compose.yaml up -d llm`, or `nemotron-speech serve-llm`), "
    "or point --llm-url / NEMOTRON_LLM_URL at it"
)


@dataclass(frozen=True)
class Probe:
    """What answered at a service's address. `ours` = that service answered (healthy or not)."""

    ours: bool
    status: int = 0
    body: object = None
    error: str = ""  # nothing answered: why


def _probe(url: str, timeout: float, is_ours) -> Probe:
    try:
        status, body = http_request(url, timeout=timeout)
    except Unreachable as exc:
        return Probe(False, error=str(exc))
    return Probe(is_ours(status, body), status, body)


class Probes:
    """One probe per service per run, shared by the service, port and memory checks."""

    def __init__(self, options: Options):
        self.options = options

    @cached_property
    def asr(self) -> Probe:
        """GET /health on the ASR server's port: {"status": "ready"|"loading"|..., "streams": n}."""
        return _probe(
            f"{http_root(self.options.asr_url)}/health",
            self.options.timeout,
            lambda _, body: isinstance(body, dict) and body.get("status") in ASR_STATES,
        )

    @cached_property
    def llm(self) -> Probe:
        """GET vLLM's /health: 200 with an empty body once the engine is up."""
        return _probe(
            f"{http_root(self.options.llm_url)}/health",
            self.options.timeout,
            lambda status, body: status == 200 and body == "",
        )

    @cached_property
    def bot(self) -> Probe:
        """GET /status on the bot's port: pipecat's runner answers {"status": ..., "transports"}."""
        return _probe(
            f"http://127.0.0.1:{self.options.bot_port}/status",
            self.options.timeout,
            lambda _, body: isinstance(body, dict) and "transports" in body,
        )

    def running(self) -> dict[str, bool]:
        """Which services already run (so the memory check does not count them again)."""
        asr_ready = self.asr.ours and isinstance(self.asr.body, dict)
        return {
            "llm": self.llm.ours,
            "asr": asr_ready and self.asr.body.get("status") == "ready",
            "bot": self.bot.ours,
        }


def asr_check(options: Options, probes: Probes) -> Check:
    """The ASR server is ready (warmed up) and gives this client a stream."""
    name, url = "ASR server", options.asr_url
    if options.asr_model:
        from nemotron_speech.doctor.files import asr_model_check

        return _in_process(asr_model_check(options, name="ASR (in-process)"))
    probe = probes.asr
    if probe.error:
        return fail(name, f"{url}: {probe.error}", START_ASR)
    if not probe.ours:
        return fail(
            name,
            f"{url}: /health answered HTTP {probe.status} {str(probe.body)[:80]!r}, "
            "which is not the ASR server",
            "point --asr-url / NEMOTRON_ASR_URL at the ASR server",
        )
    state = probe.body["status"]
    if state != "ready":
        return fail(
            name,
            f"{url} is {state}: /health says ready only once the model is loaded and warmed up",
            "wait for it (`docker compose -f docker/compose.yaml ps` shows when it is healthy); "
            "if it stays loading, its log says why",
        )
    from nemotron_speech.client import AsrConnectionError

    try:
        ready, seconds = asyncio.run(_open_stream(url, options.asr_token, options.timeout))
    except AsrConnectionError as exc:
        fix = (
            "set ASR_AUTH_TOKEN to the server's --auth-token"
            if exc.code == 401
            else "see the ASR server's log; raise its --max-streams if it is at its limit"
        )
        return fail(name, f"{url} is ready but refused a stream: {exc}", fix)
    return ok(
        name,
        f"{url} ready and warmed up; a stream opened in {seconds:.2f} s "
        f"({ready.chunk_ms:.0f} ms chunks, right context {ready.right_context})",
    )


def _in_process(check: Check) -> Check:
    """The in-process ASR also needs NeMo in the bot's environment."""
    import importlib.util

    if check.failed or importlib.util.find_spec("nemo") is not None:
        return check
    return fail(
        check.name,
        "--asr-model runs NeMo inside the bot, and NeMo is not installed here",
        "install the project's asr extra in this environment, or use an ASR server (--asr-url)",
    )


async def _open_stream(url: str, token: str | None, timeout: float):
    from nemotron_speech.client import AsrClient

    t0 = time.monotonic()
    client = await AsrClient.connect(url, token=token, open_timeout=timeout)
    seconds = time.monotonic() - t0
    await client.close()
    return client.ready, seconds


def llm_check(options: Options, probes: Probes) -> Check:
    """vLLM is up, serves the model the bot asks for, and answers a short completion."""
    name, url, model = "LLM server", options.llm_url.rstrip("/"), options.llm_model
    probe = probes.llm
    if probe.error:
        return fail(name, f"{url}: {probe.error}", START_LLM)
    if not probe.ours:
        return fail(
            name,
            f"{http_root(url)}/health answered HTTP {probe.status}: not a vLLM that is up",
            "vLLM answers /health once its engine has loaded; see its log "
            "(`docker compose -f docker/compose.yaml logs llm`)",
        )
    auth = {"Authorization": f"Bearer {options.llm_api_key}"} if options.llm_api_key else {}
    try:
        status, body = http_request(f"{url}/models", timeout=options.timeout, headers=auth)
    except Unreachable as exc:
        return fail(name, f"{url}/models: {exc}", START_LLM)
    if status == 401:
        return fail(
            name,
            f"{url} wants an API key" + (" (the one given is wrong)" if auth else ""),
            "set --llm-api-key / NEMOTRON_LLM_API_KEY to vLLM's --api-key",
        )
    served = [m.get("id") for m in body.get("data", [])] if isinstance(body, dict) else []
    if model not in served:
        return fail(
            name,
            f"{url} serves {served or 'nothing'} (HTTP {status}), not {model!r}",
            f"set --llm-model / NEMOTRON_LLM_MODEL to {served[0]!r}"
            if served
            else "point --llm-url at vLLM's OpenAI API (it ends in /v1)",
        )
    try:
        seconds = warm_up(url, model, api_key=options.llm_api_key, timeout=options.timeout)
    except WarmupError as exc:
        return fail(name, f"a chat completion failed: {exc}", "see vLLM's log")
    try:
        _, info = http_request(f"{http_root(url)}/version", timeout=options.timeout)
        version = f" (vLLM {info['version']})" if isinstance(info, dict) else ""
    except (Unreachable, KeyError):
        version = ""
    return ok(name, f"{url} serves {model}{version}; a short chat completion took {seconds:.2f} s")


def port_free(port: int) -> bool:
    """Whether a server could listen on `port` now, whatever address it binds: binding the
    wildcard address fails while anything listens on the port (SO_REUSEADDR, as servers set it,
    so a port with connections in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def port_checks(options: Options, probes: Probes) -> list[Check]:
    """The ports the stack binds here are free, or held by that very service."""
    wanted = [("vLLM", *host_port(options.llm_url, LLM_PORT), probes.llm, "--llm-url")]
    if not options.asr_model:
        wanted.append(
            ("the ASR server", *host_port(options.asr_url, ASR_PORT), probes.asr, "--asr-url")
        )
    wanted.append(("the voice bot", "localhost", options.bot_port, probes.bot, "--port"))
    checks = []
    for label, host, port, probe, flag in wanted:
        name = f"port {port}"
        if not is_local(host):
            checks.append(skip(name, f"{label} runs on {host}, not here"))
        elif port_free(port):
            checks.append(ok(name, f"free for {label}"))
        elif probe.ours:
            checks.append(ok(name, f"in use by {label}, which answers there"))
        else:
            checks.append(
                fail(
                    name,
                    f"in use by another program, so {label} cannot listen on it",
                    f"`ss -ltnp 'sport = :{port}'` shows which; stop it, or move {label} to "
                    f"another port ({flag})",
                )
            )
    return checks
