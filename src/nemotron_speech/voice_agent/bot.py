"""The bundled voice bot (`pipelines/voice_bot.py`), buildable on any transport.

Kept in the package, not in the runner script, so the end-to-end tests build exactly the bot
users run, on a test transport instead of a browser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loguru import logger
from pipecat.transports.base_transport import BaseTransport, TransportParams

from nemotron_speech.voice_agent.builder import VoiceAgent, build_voice_agent
from nemotron_speech.voice_agent.config import BotConfig, make_llm, make_stt, make_tts
from nemotron_speech.voice_agent.tools import get_weather

TELEPHONY = ("twilio", "telnyx", "plivo", "exotel")


def _daily_params(**kwargs: Any) -> TransportParams:
    try:
        from pipecat.transports.daily.transport import DailyParams
    except ImportError as exc:
        raise ImportError(
            "-t daily needs the Daily SDK: pip install 'pipecat-ai[daily]' "
            "(and DAILY_API_KEY for the runner to create a room)"
        ) from exc
    return DailyParams(**kwargs)


def _websocket_params(serializer: bool, **kwargs: Any) -> TransportParams:
    from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

    if serializer:  # a plain WebSocket client speaks pipecat's protobuf frames
        from pipecat.serializers.protobuf import ProtobufFrameSerializer

        kwargs["serializer"] = ProtobufFrameSerializer()
    return FastAPIWebsocketParams(**kwargs)  # telephony: the runner picks the serializer


def transport_params(
    *, audio_in: bool = True, audio_out: bool = True
) -> dict[str, Callable[[], TransportParams]]:
    """Parameter factories for pipecat's `create_transport`, one per runner transport.

    Factories, so only the transport the runner picked is imported (Daily's SDK is optional).
    """
    kw = {"audio_in_enabled": audio_in, "audio_out_enabled": audio_out}
    params: dict[str, Callable[[], TransportParams]] = {
        "webrtc": lambda: TransportParams(**kw),
        "daily": lambda: _daily_params(**kw),
        "websocket": lambda: _websocket_params(True, **kw),
    }
    for name in TELEPHONY:
        params[name] = lambda: _websocket_params(False, **kw)
    return params


def build_bot(transport: BaseTransport, config: BotConfig, **kwargs: Any) -> VoiceAgent:
    """The voice bot on `transport`: greets, keeps the context, calls `get_weather`, barge-in.

    `kwargs` go to `build_voice_agent` (replace a service, add observers, pipeline params...).
    """
    services = {"stt": make_stt(config), "llm": make_llm(config), "tts": make_tts(config)}
    agent = build_voice_agent(
        transport=transport,
        system_prompt=config.system_prompt,
        tools=[get_weather],
        **{**services, **kwargs},
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(_transport: BaseTransport, _client: Any):
        logger.info("client connected")
        if config.greeting:
            await agent.say(config.greeting)

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport: BaseTransport, _client: Any):
        logger.info("client disconnected")
        await agent.worker.cancel()

    return agent
