"""What the bundled pipelines are configured with, from flags or environment variables.

Each flag has an environment variable (`NEMOTRON_...`) so a container is configured without
changing its command line; a flag wins over its variable, and a `.env` file in the working
directory sets variables as in pipecat's examples. The service factories here are the only
place the pipelines pick STT, LLM and TTS classes, so every pipeline offers the same choices.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from nemotron_speech.endpoints import ASR_URL, LLM_MODEL, LLM_URL
from nemotron_speech.env import load_env
from nemotron_speech.tts import TTS_KINDS, create_tts

SYSTEM_PROMPT = (
    "You are a friendly voice assistant that runs entirely on local NVIDIA hardware. Your "
    "replies are spoken aloud: answer in one or two short sentences of plain speech, with no "
    "lists, markdown, code or emoji. If you need the weather, call the get_weather tool."
)
GREETING = "Hello! I'm your Nemotron voice assistant. How can I help?"
# said when the model's reply has nothing to say aloud (e.g. a malformed or cut-off tool call):
# silence would leave the user waiting for an answer that never comes
EMPTY_REPLY = "Sorry, I lost my train of thought. Could you say that again?"


@dataclass
class BotConfig:
    """Everything the bundled pipelines need to build their services.

    Attributes:
        asr_url: WebSocket URL of the ASR server (`python -m nemotron_speech.server`).
        asr_model: A `.nemo` to run in-process instead of the server (no WebSocket hop).
        asr_device: Device for the in-process model (`cpu`, `cuda`).
        right_context: Right context for the in-process model (the server picks its own).
        llm_url: OpenAI endpoint of vLLM (`nemotron-speech serve-llm`).
        llm_model: The model name vLLM serves.
        llm_api_key: vLLM's `--api-key`, if any.
        max_tokens: Longest reply in tokens (None: the server's limit).
        tts: `kokoro` (natural, weights in models/tts), `magpie` (NVIDIA Magpie in-process,
            on `tts_device`) or `espeak` (any CPU, robotic).
        tts_voice: Voice name for the chosen TTS (default: the TTS's own).
        magpie_model: Magpie `.nemo` (default: under models_dir, from `download magpie`).
        magpie_codec: Its audio codec `.nemo` (default: under models_dir).
        tts_device: Device for Magpie (`cuda`, `cpu`).
        models_dir: Where `nemotron-speech download` put the weights.
        system_prompt: The LLM's instructions.
        greeting: Spoken when a client connects ("" for none).
    """

    asr_url: str = ASR_URL
    asr_model: str | None = None
    asr_device: str = "cuda"
    right_context: int | None = None
    llm_url: str = LLM_URL
    llm_model: str = LLM_MODEL
    llm_api_key: str | None = None
    max_tokens: int | None = None
    tts: str = "kokoro"
    tts_voice: str | None = None
    magpie_model: str | None = None
    magpie_codec: str | None = None
    tts_device: str = "cuda"
    models_dir: str | None = None
    system_prompt: str = SYSTEM_PROMPT
    greeting: str = GREETING

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BotConfig:
        """The config from parsed `add_arguments` flags (unknown attributes are ignored)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def _env(name: str, default: object) -> object:
    return os.environ.get(f"NEMOTRON_{name.upper()}", default)


def add_arguments(
    parser: argparse.ArgumentParser, *, stt: bool = True, llm: bool = True, tts: bool = True
) -> argparse.ArgumentParser:
    """Add the service flags a pipeline uses; defaults come from `NEMOTRON_<FLAG>` variables
    (after `.env` is read, so its values show in `--help` too)."""
    load_env()
    d = BotConfig()
    group = parser.add_argument_group("nemotron-speech services (env: NEMOTRON_<NAME>)")
    if stt:
        group.add_argument("--asr-url", default=_env("asr_url", d.asr_url), help="ASR server URL")
        group.add_argument(
            "--asr-model",
            default=_env("asr_model", d.asr_model),
            help="run this .nemo in-process instead of using --asr-url",
        )
        group.add_argument("--asr-device", default=_env("asr_device", d.asr_device))
        group.add_argument(
            "--right-context",
            type=int,
            default=_env("right_context", d.right_context),
            help="in-process model right context in 80 ms frames (0, 1, 6, 13)",
        )
    if llm:
        group.add_argument("--llm-url", default=_env("llm_url", d.llm_url), help="vLLM /v1 URL")
        group.add_argument("--llm-model", default=_env("llm_model", d.llm_model))
        group.add_argument("--llm-api-key", default=_env("llm_api_key", d.llm_api_key))
        group.add_argument("--max-tokens", type=int, default=_env("max_tokens", d.max_tokens))
        group.add_argument("--system-prompt", default=_env("system_prompt", d.system_prompt))
    if tts:
        group.add_argument("--tts", choices=TTS_KINDS, default=_env("tts", d.tts))
        group.add_argument("--tts-voice", default=_env("tts_voice", d.tts_voice))
        group.add_argument(
            "--magpie-model",
            default=_env("magpie_model", d.magpie_model),
            help="Magpie .nemo for --tts magpie (default: under --models-dir)",
        )
        group.add_argument(
            "--magpie-codec",
            default=_env("magpie_codec", d.magpie_codec),
            help="Magpie's audio codec .nemo (default: under --models-dir)",
        )
        group.add_argument("--tts-device", default=_env("tts_device", d.tts_device))
        group.add_argument("--models-dir", default=_env("models_dir", d.models_dir))
        group.add_argument("--greeting", default=_env("greeting", d.greeting))
    return parser


def make_stt(config: BotConfig) -> STTService:
    """The in-process STT when a model is given, else the WebSocket STT on `asr_url`."""
    if config.asr_model:
        from nemotron_speech.services.local_stt import NemotronLocalSTTService

        return NemotronLocalSTTService(
            model_path=config.asr_model,
            device=config.asr_device,
            right_context=config.right_context,
        )
    from nemotron_speech.services.stt import NemotronSTTService

    return NemotronSTTService(
        settings=NemotronSTTService.Settings(url=config.asr_url),
        auth_token=os.environ.get("ASR_AUTH_TOKEN"),
    )


def make_llm(config: BotConfig) -> LLMService:
    """Nemotron on vLLM, thinking off (a voice turn cannot wait for reasoning), `EMPTY_REPLY`
    for a reply without words."""
    from nemotron_speech.services.llm import NemotronLLMService

    settings = NemotronLLMService.Settings(model=config.llm_model)
    if config.max_tokens:
        settings.max_tokens = config.max_tokens
    return NemotronLLMService(
        base_url=config.llm_url,
        api_key=config.llm_api_key,
        settings=settings,
        empty_reply=EMPTY_REPLY,
    )


def make_tts(config: BotConfig) -> TTSService:
    """The configured local TTS; fails at start-up if its weights or binary are missing."""
    options = {}
    if config.tts == "magpie":
        options = {
            "model_path": config.magpie_model,
            "codec_path": config.magpie_codec,
            "device": config.tts_device,
            "shared": True,  # loaded once per bot process (voice_bot.py does it before serving)
        }
    return create_tts(config.tts, models=config.models_dir, voice=config.tts_voice, **options)  # type: ignore[arg-type]
