"""The scheduler's deadline policy (`server/scheduler.py`), driven through `serve(receive)` with
the real engine and the generated test model: a lone stream is stepped at once, a ready chunk
waits up to `batch_wait` for the other open streams, and the step runs as soon as every open
stream is ready or a finalize is pending (a finalize jumps the queue)."""

from __future__ import annotations

import time

import pytest
from server_fixtures import pcm16

from nemotron_speech.asr import AsrEngine
from nemotron_speech.asr.model import load_nemo_model
from nemotron_speech.protocol import CloseCode, Error, Transcript
from nemotron_speech.server.commands import (
    Close,
    Consumed,
    Feed,
    Finalize,
    Flush,
    Interim,
    Open,
    Opened,
    Stop,
    StreamClosed,
)
from nemotron_speech.server.inference import coalesce
from nemotron_speech.server.metrics import ServerMetrics
from nemotron_speech.server.scheduler import IDLE_SPELL_S, Scheduler

WAIT = 30.0  # a batch wait no test run could mistake for "at once"
CHUNK_BYTES = 16000 * 2 // 2  # 0.5 s of audio: at least one full chunk at R=1
IDLE = 1.0  # seconds the scheduler sits idle in the idle-spell test


@pytest.fixture(scope="module", params=(False, True), ids=("stepped", "pipelined"))
def engine(asr_model_path, request):
    """The CPU engine, stepped as on a CPU, or pipelined as on a GPU (each step launched before
    the one before is finished: on a CPU the launch computes it, which the order does not see)."""
    engine = AsrEngine(load_nemo_model(asr_model_path, device="cpu"), right_context=1)
    engine.launches_ahead = request.param
    return engine


@pytest.fixture(scope="module")
def audio(speech_wavs) -> bytes:
    return pcm16(speech_wavs[2])


class Script:
    """A `receive` that plays one command list per call and records the timeout it was given;
    `events` are the scheduler's posts, per call of `receive` that followed them."""

    def __init__(self, *batches):
        self.batches = list(batches)
        self.timeouts: list[float] = []  # of the calls that may wait (IDLE_SPELL_S: no work)
        self.drains = 0  # calls that must not wait: one after every step
        self.events: list[tuple[int, object]] = []
        self.streams: dict[int, int] = {}  # key -> stream id, from the Opened events
        self.stop_when_drained = False  # Stop comes right after a step, not after a wait

    def post(self, events) -> None:
        for key, event in events:
            if isinstance(event, Opened):
                self.streams[key] = event.stream_id
        self.events += events

    def receive(self, timeout: float) -> list:
        if timeout == 0:  # the drain after a step: nothing arrives during one here
            self.drains += 1
            return [Stop()] if self.stop_when_drained and not self.batches else []
        self.timeouts.append(timeout)
        if not self.batches:
            return [Stop()]
        batch = self.batches.pop(0)
        return batch(self) if callable(batch) else batch

    def kinds(self, key: int) -> list[type]:
        return [type(event) for k, event in self.events if k == key]


def run(engine, script: Script) -> Script:
    Scheduler(engine, ServerMetrics(), script.post, batch_wait=WAIT).serve(script.receive)
    for stream_id in list(engine._streams):  # leave the shared engine clean
        engine.close(stream_id)
    return script


def feed(key: int, data: bytes):
    return lambda script: [Feed(script.streams[key], data)]


def test_a_lone_stream_is_stepped_at_once(engine, audio):
    script = run(engine, Script([Open(0)], feed(0, audio[:CHUNK_BYTES])))
    # no work, then the feed: never a batch wait
    assert script.timeouts[:2] == [IDLE_SPELL_S, IDLE_SPELL_S]
    assert Transcript in script.kinds(0) or Consumed in script.kinds(0)
    assert script.timeouts[2] == IDLE_SPELL_S  # stepped before it asked for more
    assert script.drains >= 1  # and took what had queued during the step before idling


def test_a_ready_chunk_waits_for_the_other_streams_then_steps_with_them(engine, audio):
    script = Script([Open(0), Open(1)], feed(0, audio[:CHUNK_BYTES]), feed(1, audio[:CHUNK_BYTES]))
    run(engine, script)
    waited = script.timeouts[2]
    assert waited is not None and WAIT - 5 < waited <= WAIT  # stream 1 may still send
    consumed = [key for key, event in script.events if isinstance(event, Consumed)]
    assert consumed[:2] in ([0, 1], [1, 0])  # one step took both
    assert script.timeouts[3] == IDLE_SPELL_S


def test_a_finalize_jumps_the_queue(engine, audio):
    finalize = lambda script: [Finalize(script.streams[0], True, time.perf_counter())]  # noqa: E731
    script = Script([Open(0), Open(1)], feed(0, audio[:1600]), finalize)
    run(engine, script)
    assert script.timeouts[2] == IDLE_SPELL_S  # 50 ms: no chunk to step yet
    finals = [e for k, e in script.events if k == 0 and isinstance(e, Transcript) and e.finalize]
    assert len(finals) == 1  # delivered before the next receive: no wait for stream 1
    assert script.timeouts[3] == IDLE_SPELL_S


def test_after_an_idle_spell_a_ready_chunk_waits_again(engine, audio):
    """The batch wait counts from when a chunk arrived: one that comes after the scheduler sat
    idle waits for the other open streams as usual (not as if it had waited through a step)."""
    chunk = audio[:CHUNK_BYTES]
    both = lambda script: [Feed(script.streams[k], chunk) for k in (0, 1)]  # noqa: E731

    def after_idling(script: Script) -> list:
        time.sleep(IDLE)
        return feed(0, audio[CHUNK_BYTES : 2 * CHUNK_BYTES])(script)

    script = Script([Open(0), Open(1)], both, after_idling)
    run(engine, script)
    assert script.timeouts[2] == IDLE_SPELL_S  # both ready at once: stepped, then idle
    waited = script.timeouts[3]
    assert waited is not None and WAIT - IDLE / 2 < waited <= WAIT  # not shortened by the idling


def test_coalesce_joins_each_streams_consecutive_audio_and_keeps_every_order():
    """What a front sends after waiting on a busy engine process: per stream, the same audio
    and commands in the same order, with audio joined only where nothing of its stream lies
    between."""
    commands = [
        Feed(1, b"a"), Feed(2, b"x"), Feed(1, b"b"), Finalize(1, False, 0.0), Feed(1, b"c"),
        Feed(2, b"y"), Open("k"), Feed(1, b"d"), Close(2), Feed(2, b"z"),
    ]  # fmt: skip
    assert coalesce(commands) == [
        Feed(1, b"ab"), Feed(2, b"xy"), Finalize(1, False, 0.0), Feed(1, b"cd"), Open("k"),
        Close(2), Feed(2, b"z"),
    ]  # fmt: skip
    assert coalesce([]) == []


def test_too_much_audio_during_a_reset_ends_the_stream_with_1008(engine, audio):
    """Audio sent while a reset is in progress waits for its final (the engine takes none until
    the stream is clean), bounded like the engine's own buffer: past twice that bound the stream
    ends with 1008 rather than growing without limit. All in one batch of commands, so no step
    can finish the reset first."""
    packet = audio[:CHUNK_BYTES]
    bound = 2 * engine.max_buffered_samples  # bytes: twice the engine's bound in samples

    def reset_then_flood(script: Script) -> list:
        stream_id = script.streams[0]
        flood = [Feed(stream_id, packet)] * (bound // len(packet) + 1)
        return [Finalize(stream_id, True, time.perf_counter()), *flood]

    script = run(engine, Script([Open(0)], feed(0, audio[:1600]), reset_then_flood))
    events = [event for key, event in script.events if key == 0 and not isinstance(event, Opened)]
    assert events[-2:] == [
        Error("audio buffer full: too much audio arrived while finalizing"),
        StreamClosed(CloseCode.POLICY_VIOLATION, "audio buffer full"),
    ]
    assert not any(isinstance(event, Transcript) and event.finalize for event in events)


def test_commands_replayed_after_a_final_keep_other_streams_results_in_order(engine, audio):
    """A flush that waited for a stream's final runs once the step that delivered the final is
    out: pipelined, it finishes the step in flight, whose results must not land in the middle
    of that step's (stream 1's interims would then arrive out of order)."""

    def together(script: Script) -> list:
        a, b = script.streams[0], script.streams[1]
        return [Feed(b, audio), Feed(a, audio[:4000]), Finalize(a, False, time.perf_counter()),
                Flush(a)]  # fmt: skip

    script = run(engine, Script([Open(0), Open(1)], together))
    at = [e.audio_bytes for key, e in script.events if key == 1 and isinstance(e, Interim)]
    assert len(at) >= 2 and at == sorted(at)
    answers = [event for key, event in script.events if key == 0 and isinstance(event, Transcript)]
    assert [event.finalize for event in answers] == [True, False]  # the final, then the flush's


def test_a_stop_with_a_step_in_flight_posts_that_steps_results(engine, audio):
    """Stop arriving right after a step was launched: the step is finished and its results
    posted before `serve` returns (finals on shutdown depend on it)."""

    def first_chunk(script: Script) -> list:  # exactly: the stream then has caught up
        stream_id = script.streams[0]
        return [Feed(stream_id, audio[: engine.next_chunk_bytes(stream_id)])]

    script = Script([Open(0)], first_chunk)
    script.stop_when_drained = True
    run(engine, script)
    assert script.drains == 1 and len(script.timeouts) == 2  # it stopped at the first drain
    assert Consumed in script.kinds(0)


@pytest.mark.parametrize("half", ("launch", "finish"))
def test_an_engine_failure_in_either_half_of_a_step_fails_its_streams_only(
    engine, audio, monkeypatch, half
):
    """The engine raising in a launch or in a finish ends every stream it had with 1011 and the
    scheduler goes on: a stream opened afterwards is served."""
    real = getattr(engine, half)
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(half)
        if len(calls) == 1:
            if half == "finish":
                real(*args, **kwargs)  # keep the engine's own order of launches
            raise RuntimeError("injected engine fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, half, failing_once)
    chunk = audio[:CHUNK_BYTES]
    script = run(engine, Script([Open(0)], feed(0, chunk), [Open(1)], feed(1, chunk)))
    closed = [e for k, e in script.events if k == 0 and isinstance(e, StreamClosed)]
    assert [e.code for e in closed] == [CloseCode.INTERNAL_ERROR]
    assert StreamClosed not in script.kinds(1) and Consumed in script.kinds(1)
