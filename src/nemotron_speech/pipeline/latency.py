"""Voice-to-voice latency per turn, from pipecat's `UserBotLatencyObserver`.

The observer measures from the moment the user actually stopped speaking (VAD stop minus its
`stop_secs`) to `BotStartedSpeakingFrame` from the output transport, and splits that time into
named contributions: endpointing wait (VAD), transcription (STT finalize), turn detection
(smart-turn), LLM inference (first token), speech synthesis (first audio) and output transport.
`TurnLatencyLog` logs one breakdown per turn and keeps them, so tests and benchmarks can read the
same numbers the log shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loguru import logger
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown, UserBotLatencyObserver


@dataclass
class TurnLatencyLog:
    """Collects and logs the observer's per-turn breakdowns.

    Attributes:
        observer: The observer to add to the pipeline worker.
        breakdowns: One entry per measured turn, oldest first.
        first_speech_secs: Client connected -> first bot speech (the greeting), once known.
    """

    observer: UserBotLatencyObserver = field(default_factory=UserBotLatencyObserver)
    breakdowns: list[LatencyBreakdown] = field(default_factory=list)
    first_speech_secs: float | None = None

    def __post_init__(self):
        self.observer.add_event_handler("on_latency_breakdown", self._on_breakdown)
        self.observer.add_event_handler("on_first_bot_speech_latency", self._on_first_speech)

    async def _on_breakdown(self, _observer: UserBotLatencyObserver, breakdown: LatencyBreakdown):
        self.breakdowns.append(breakdown)
        lines = "\n".join(f"  {line}" for line in breakdown.turn_contribution_lines())
        logger.info(
            f"voice-to-voice {breakdown.total_secs:.3f}s, turn {len(self.breakdowns)}:\n{lines}"
        )

    async def _on_first_speech(self, _observer: UserBotLatencyObserver, secs: float):
        self.first_speech_secs = secs
        logger.info(f"first bot speech {secs:.3f}s after the client connected")


def contributions(breakdown: LatencyBreakdown) -> dict[str, float]:
    """Seconds per contribution key (`endpointing_wait`, `transcription`, `llm_inference`...)."""
    totals: dict[str, float] = {}
    for part in breakdown.contributions:
        totals[part.key] = totals.get(part.key, 0.0) + part.duration_secs
    return totals
