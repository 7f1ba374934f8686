"""`NemotronLLMService`: Nemotron-3-Nano served by vLLM, with thinking off unless asked for.

vLLM speaks the OpenAI chat API; what this adds to pipecat's `NvidiaLLMService` (which already
turns `reasoning` / `reasoning_content` deltas into `LLMThought*Frame`s that never reach TTS) is
the local server's defaults, the `enable_thinking` switch of the Nemotron chat template, and an
optional spoken fallback for a reply that says nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from loguru import logger
from pipecat.adapters.llm.services.open_ai_adapter import OpenAILLMInvocationParams
from pipecat.frames.frames import LLMTextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import FunctionCallFromLLM
from pipecat.services.nvidia.llm import NvidiaLLMService
from pipecat.utils.types import NOT_GIVEN, NotGiven, assert_given

from nemotron_speech.endpoints import LLM_MODEL, LLM_URL


@dataclass
class NemotronLLMSettings(NvidiaLLMService.Settings):
    """Settings for `NemotronLLMService`.

    Parameters:
        enable_thinking: Whether the model reasons before answering. Off by default: for a
            voice turn, reasoning only delays the first spoken word. Sent on every request as
            `chat_template_kwargs`, so it wins over the server's default and can be switched at
            runtime with `LLMUpdateSettingsFrame(delta=NemotronLLMService.Settings(...))`.
            `None` leaves it to the server's `--default-chat-template-kwargs`.
    """

    enable_thinking: bool | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class NemotronLLMService(NvidiaLLMService):
    """Nemotron-3-Nano on a local vLLM OpenAI server (`nemotron-speech serve-llm`).

    Tool calls work as with any pipecat OpenAI service (vLLM parses the model's qwen3_coder
    calls); reasoning, when enabled, arrives as `LLMThought*Frame`s.

    Example::

        llm = NemotronLLMService(
            base_url="http://spark:8000/v1",
            settings=NemotronLLMService.Settings(temperature=0.6, enable_thinking=False),
        )
    """

    Settings = NemotronLLMSettings
    _settings: Settings

    def __init__(
        self,
        *,
        base_url: str = LLM_URL,
        api_key: str | None = None,
        settings: Settings | None = None,
        empty_reply: str | None = None,
        **kwargs,
    ):
        """Initialize the service.

        Args:
            base_url: The vLLM server's OpenAI endpoint.
            api_key: The server's `--api-key`, if it was started with one.
            settings: Runtime-updatable settings; `model` must match `--served-model-name`
                (default: the name `nemotron-speech serve-llm` serves).
            empty_reply: Text to answer with when a completed reply has neither text nor a tool
                call that can run: a tool call cut off by `max_tokens`, malformed, or with
                arguments that are not JSON (vLLM's tool parser swallows its text, so nothing
                else would be said). A voice user otherwise hears silence. None: say nothing.
            **kwargs: Passed to `NvidiaLLMService` / `OpenAILLMService`.
        """
        self._empty_reply = empty_reply
        self._replied = False
        default_settings = self.Settings(model=LLM_MODEL, enable_thinking=False)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(api_key=api_key, base_url=base_url, settings=default_settings, **kwargs)

    async def _process_context(self, context: LLMContext):
        """Stream one reply; with `empty_reply` set, say it when the reply said nothing (not
        when the request failed or was interrupted: those raise through here)."""
        self._replied = False
        await super()._process_context(context)
        if self._empty_reply and not self._replied:
            logger.warning(f"{self}: the reply had no text and no usable tool call")
            await self.push_frame(LLMTextFrame(self._empty_reply))

    async def _push_llm_text(self, text: str):
        # before pipecat's turn-completion filter: text it holds back was still a reply
        self._replied = self._replied or bool(text.strip())
        await super()._push_llm_text(text)

    async def run_function_calls(self, function_calls: Sequence[FunctionCallFromLLM]):
        # only calls whose arguments parsed come here; their results make the next reply
        self._replied = self._replied or bool(function_calls)
        await super().run_function_calls(function_calls)

    def build_chat_completion_params(self, params_from_context: OpenAILLMInvocationParams) -> dict:
        """Add `chat_template_kwargs` through `extra_body` (the OpenAI client rejects unknown
        keyword arguments); an `extra_body` given in `settings.extra` wins."""
        params = super().build_chat_completion_params(params_from_context)
        enable_thinking = assert_given(self._settings.enable_thinking)
        if enable_thinking is not None:
            self._merge_extra_body(
                params, {"chat_template_kwargs": {"enable_thinking": enable_thinking}}
            )
        return params
