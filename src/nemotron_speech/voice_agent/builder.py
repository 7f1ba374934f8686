"""Build the standard Pipecat voice-agent pipeline from its pieces.

    transport.input() -> STT -> user aggregator (Silero VAD + smart-turn) -> LLM -> TTS
        -> transport.output() -> assistant aggregator

Every piece is an argument, so a caller swaps the STT for the in-process one, the TTS for
Kokoro or espeak-ng, the turn strategies for a speech timeout, or leaves the STT (text in) or
the TTS (text out) out altogether. What the builder adds is what every voice agent needs and is
easy to get subtly wrong: one shared `LLMContext` with the tools, the system prompt on the LLM
service, VAD tuned to the 0.2 s stop the turn strategies expect, metrics on, and a
voice-to-voice latency log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, LLMMessagesAppendFrame, LLMRunFrame, TTSSpeakFrame
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMContextAggregatorPair,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.transports.base_transport import BaseTransport
from pipecat.utils.types import NOT_GIVEN
from pipecat.workers.runner import WorkerRunner

from nemotron_speech.voice_agent.turn_latency import TurnLatencyLog

VAD_STOP_SECS = 0.2  # pipecat's turn strategies assume 0.2 s (they warn otherwise)


@dataclass
class VoiceAgent:
    """A built voice agent: its pipeline, worker, shared context and latency log.

    Attributes:
        pipeline: The processors in order.
        worker: The `PipelineWorker` that runs the pipeline.
        context: The conversation, shared by both aggregators.
        user_aggregator: Ends user turns (VAD, smart-turn) and asks the LLM to answer.
        assistant_aggregator: Adds what the bot said (and tool results) to the context.
        latency: Per-turn voice-to-voice breakdowns.
    """

    pipeline: Pipeline
    worker: PipelineWorker
    context: LLMContext
    user_aggregator: LLMUserAggregator
    assistant_aggregator: LLMAssistantAggregator
    latency: TurnLatencyLog = field(default_factory=TurnLatencyLog)

    async def say(self, text: str) -> None:
        """Speak `text` now (added to the context as the bot's words), without the LLM."""
        await self.worker.queue_frame(TTSSpeakFrame(text))

    async def prompt(self, instruction: str) -> None:
        """Let the LLM speak first, e.g. a greeting written from `instruction`."""
        self.context.add_message({"role": "developer", "content": instruction})
        await self.worker.queue_frame(LLMRunFrame())

    async def run(self, *, handle_sigint: bool = False) -> None:
        """Run until the worker ends (an `EndFrame`, a cancel, or SIGINT if handled)."""
        runner = WorkerRunner(handle_sigint=handle_sigint)
        await runner.add_workers(self.worker)
        await runner.run()


def default_user_params() -> LLMUserAggregatorParams:
    """Silero VAD (0.2 s stop) in the user aggregator, pipecat's default turn strategies.

    The defaults start a turn on VAD or on any transcript (so speaking over the bot interrupts
    it) and end it when smart-turn v3 says the utterance is complete and the STT's finalized
    transcript is in.
    """
    return LLMUserAggregatorParams(
        vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=VAD_STOP_SECS))
    )


def build_voice_agent(
    *,
    transport: BaseTransport,
    llm: LLMService,
    stt: FrameProcessor | None = None,
    tts: FrameProcessor | None = None,
    system_prompt: str | None = None,
    tools: ToolsSchema | list | None = None,
    context: LLMContext | None = None,
    user_params: LLMUserAggregatorParams | None = None,
    pre_llm: Sequence[FrameProcessor] = (),
    params: PipelineParams | None = None,
    observers: Sequence[BaseObserver] = (),
    latency: TurnLatencyLog | None = None,
    **worker_kwargs: Any,
) -> VoiceAgent:
    """Assemble a voice agent; everything but the transport and the LLM is optional.

    Args:
        transport: Where audio (or text) comes from and goes to: SmallWebRTC, Daily, a
            telephony WebSocket, or a test transport.
        llm: The LLM service (e.g. `NemotronLLMService`).
        stt: Speech-to-text; None for text input (frames from the transport or the caller).
        tts: Text-to-speech; None for text output (RTVI bot-output messages, logs).
        system_prompt: The LLM's instructions, set on the service (`append_system_instruction`)
            rather than as a context message, as pipecat >= 1.9 wants: it then survives context
            resets and is sent first on every request.
        tools: Direct functions or `FunctionSchema`s with handlers (registered with the LLM
            automatically), or a `ToolsSchema`. Ignored when `context` is given.
        context: A context to continue instead of a new one.
        user_params: Replaces `default_user_params()` (VAD, turn and mute strategies, timeouts).
        pre_llm: Processors between the user aggregator and the LLM (filters, loggers).
        params: Replaces the default `PipelineParams` (metrics and usage metrics on).
        observers: Extra observers for the worker.
        latency: Replaces the default per-turn latency log (e.g. a custom observer).
        **worker_kwargs: Passed to `PipelineWorker` (idle timeout, RTVI settings...).

    Returns:
        The agent; run it with `await agent.run()` or add `agent.worker` to your own runner.
    """
    if system_prompt:
        llm.append_system_instruction(system_prompt)
    if context is None:
        context = LLMContext(tools=tools if tools else NOT_GIVEN)
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=user_params or default_user_params()
    )
    stages: list[FrameProcessor | None] = [
        transport.input(),
        stt,
        user_aggregator,
        *pre_llm,
        llm,
        tts,
        transport.output(),
        assistant_aggregator,
    ]
    pipeline = Pipeline([stage for stage in stages if stage is not None])
    latency = latency or TurnLatencyLog()
    worker = PipelineWorker(
        pipeline,
        params=params or PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        observers=[latency.observer, *observers],
        **worker_kwargs,
    )
    return VoiceAgent(pipeline, worker, context, user_aggregator, assistant_aggregator, latency)


def user_text(text: str) -> list[Frame]:
    """Frames that make `text` a user turn in a text-in agent (no STT, no VAD)."""
    return [LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True)]
