"""Composable voice-agent pipelines on Pipecat: `build_voice_agent` and its latency log."""

from nemotron_speech.voice_agent.builder import (
    VAD_STOP_SECS,
    VoiceAgent,
    build_voice_agent,
    default_user_params,
    user_text,
)
from nemotron_speech.voice_agent.turn_latency import TurnLatencyLog, contributions

__all__ = [
    "VAD_STOP_SECS",
    "TurnLatencyLog",
    "VoiceAgent",
    "build_voice_agent",
    "contributions",
    "default_user_params",
    "user_text",
]
