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
from pipecat.observers.user_bot_latency_observer import (
    LatencyBreakdown,
    MeasuredFrom,
    UserBotLatencyObserver,
)


@dataclass
class TurnLatencyLog:
    """Collects and logs the observer's per-turn breakdowns.

    Attributes:
        observer: The observer to add to the pipeline worker.
        breakdowns: One entry per user turn (user speech end -> bot speech), oldest first.
        greeting: Client connected -> the bot's first speech, when the bot spoke first.
    """

    observer: UserBotLatencyObserver = field(default_factory=UserBotLatencyObserver)
    breakdowns: list[LatencyBreakdown] = field(default_factory=list)
    greeting: LatencyBreakdown | None = None

    def __post_init__(self):
        self.observer.add_event_handler("on_latency_breakdown", self._on_breakdown)

    async def _on_breakdown(self, _observer: UserBotLatencyObserver, breakdown: LatencyBreakdown):
        lines = "\n".join(f"  {line}" for line in breakdown.turn_contribution_lines())
        if breakdown.measured_from is MeasuredFrom.CLIENT_CONNECTED:
            self.greeting = breakdown
            logger.info(f"first bot speech {breakdown.total_secs:.3f}s after connect:\n{lines}")
            return
        self.breakdowns.append(breakdown)
        turn = len(self.breakdowns)
        logger.info(f"voice-to-voice {breakdown.total_secs:.3f}s, turn {turn}:\n{lines}")


def contributions(breakdown: LatencyBreakdown) -> dict[str, float]:
    """Seconds per contribution key (`endpointing_wait`, `transcription`, `llm_inference`...)."""
    totals: dict[str, float] = {}
    for part in breakdown.contributions:
        totals[part.key] = totals.get(part.key, 0.0) + part.duration_secs
    return totals
