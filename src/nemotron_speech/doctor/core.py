"""What every doctor check shares: the report line, the options, and a small HTTP client.

Standard library only (urllib, socket): the doctor runs where torch, NeMo or pipecat may be
missing, and must say so instead of failing to import.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from nemotron_speech import download
from nemotron_speech.endpoints import ASR_URL, LLM_MODEL, LLM_URL
from nemotron_speech.llm.recipe import TARGETS

Status = Literal["pass", "fail", "skip"]

DEFAULT_BOT_PORT = 7860  # pipecat's runner


@dataclass(frozen=True)
class Check:
    """One line of the report: `detail` says what was found, `fix` what to do about a failure
    (for a skip: why the check does not apply here)."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def ok(name: str, detail: str) -> Check:
    return Check(name, "pass", detail)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


def skip(name: str, why: str) -> Check:
    return Check(name, "skip", why)


@dataclass(frozen=True)
class Options:
    """What the checks check against. The service fields mean what the bot's flags of the same
    name mean (`nemotron_speech.voice_agent.config`), so the bot can hand over its own settings.

    Attributes:
        target: vLLM target of `serve-llm` (`spark`, `x86`): memory fraction, default checkpoint.
        llm_variant: LLM checkpoint (`nvfp4`, `fp8`, `bf16`); None = the target's default.
        models_dir: Where `nemotron-speech download` put the weights (None = its default).
        asr_url: The ASR server's WebSocket URL.
        asr_token: The ASR server's bearer token, if it was started with one.
        asr_model: A `.nemo` the bot runs in-process instead of using `asr_url`.
        llm_url: vLLM's OpenAI base URL (`.../v1`).
        llm_model: The model name vLLM must serve.
        llm_api_key: vLLM's `--api-key`, if any.
        tts: `kokoro`, `espeak` or `magpie`.
        tts_voice: The TTS voice (None = the TTS's default).
        magpie_model: Magpie `.nemo` (None = where `download magpie` puts it).
        magpie_codec: Its audio codec `.nemo` (None = likewise).
        bot_port: Port the voice bot's runner listens on.
        timeout: Seconds to wait for any one answer (a completion on a cold server takes longest).
    """

    target: str = "spark"
    llm_variant: str | None = None
    models_dir: str | None = None
    asr_url: str = ASR_URL
    asr_token: str | None = None
    asr_model: str | None = None
    llm_url: str = LLM_URL
    llm_model: str = LLM_MODEL
    llm_api_key: str | None = None
    tts: str = "kokoro"
    tts_voice: str | None = None
    magpie_model: str | None = None
    magpie_codec: str | None = None
    bot_port: int = DEFAULT_BOT_PORT
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: object) -> Options:
        """Options from any object with attributes of the same names (the doctor's parsed flags,
        the bot's `BotConfig`); the ASR token comes from ASR_AUTH_TOKEN, as the STT service's."""
        values = {
            f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)
        }
        values.setdefault("asr_token", os.environ.get("ASR_AUTH_TOKEN"))
        return cls(**values)

    @property
    def variant(self) -> str:
        return self.llm_variant or TARGETS[self.target].default_variant or "nvfp4"

    @property
    def models(self) -> Path:
        return download.models_dir(self.models_dir)


class Unreachable(Exception):
    """Nothing answered at a URL; the message is the short reason (e.g. connection refused)."""


def http_request(
    url: str, *, timeout: float, body: dict | None = None, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    """GET `url` (POST `body` as JSON when given) and return (status, JSON or text).

    HTTP error statuses are returned, not raised: the caller explains them. Raises `Unreachable`
    when no HTTP server answers.
    """
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data, {"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(_reason(getattr(exc, "reason", exc), timeout)) from None
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _reason(reason: object, timeout: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused: nothing is listening there"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    return str(reason)


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """Host and port of a ws://, http:// (or wss/https) URL."""
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "localhost", parts.port or default_port


def http_root(url: str) -> str:
    """`scheme://host:port` of `url` as HTTP: the ASR server answers /health on its WS port."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


def is_local(host: str) -> bool:
    """True when `host` names this machine (so its port is bound here, and its memory is ours)."""
    if host in ("localhost", "0.0.0.0", "::", "::1") or host.startswith("127."):
        return True
    return host in (socket.gethostname(), socket.getfqdn())


def env(name: str, default: str | None = None) -> str | None:
    """`NEMOTRON_<NAME>`, the variables the bot reads too."""
    return os.environ.get(f"NEMOTRON_{name.upper()}", default)
