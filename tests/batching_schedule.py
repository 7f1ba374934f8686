"""A batching schedule for the exactness contract (batched == alone), shared by the CPU test
(`test_batching_exact.py`) and its GPU half (`test_cuda_graphs.py`, CUDA graphs).

Streams join a running engine at different ticks, one leaves mid-utterance without a final, two
ask for a context-keeping final mid-utterance and go on talking, one joins after another left
(its freed cache slot comes back), the others end with a reset finalize and leave at their
final. Every tick feeds each talking stream one chunk of audio (20 ms PCM16 packets, as the
server does) and runs one `engine.step()`, so the batch is every stream with a chunk ready: its
size passes through 3, 5 and 6 (buckets 4 and 8 with CUDA graphs), steps that mix first and
later chunks make two model calls, and a reset's last chunk (shorter: padded in time) shares a
call with full chunks. Each stream is then replayed alone on the same engine
with the same ticks; what it reports (every interim and final, with its tick) must not change.
Pipelined (`run(..., pipelined=True)`), each tick launches its step and then finishes the
previous tick's, as the server steps on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PACKET = 320  # samples: 20 ms
REQUIRED_LATER_BATCHES = {3, 5, 6}  # non-power-of-two later-step batches the schedule must hit


@dataclass(frozen=True)
class Plan:
    """One stream: `clip` opens at tick `start`; `keep_final` ticks later it asks for a final
    that keeps its context and goes on; `close` ticks later it leaves without a final. Otherwise
    it finalizes with a reset once its audio is sent, and leaves at that final."""

    clip: int
    start: int
    keep_final: int | None = None
    close: int | None = None


SCHEDULE = (
    Plan(0, start=0, keep_final=3),
    Plan(1, start=0),
    Plan(3, start=0),
    Plan(2, start=1, close=4),  # leaves mid-utterance at tick 5 ...
    Plan(4, start=3, keep_final=2),
    Plan(5, start=5),  # ... and this stream joins at tick 5, on the slot it freed
    Plan(11, start=6),  # the shortest clip (1.6 s): ends while the others run
)


@dataclass
class Outcome:
    """What each stream reported: (tick since its start, is_final, text, token ids) per result,
    and the ticks (since its start) at which it ran a chunk."""

    reports: list[list[tuple]]
    chunk_ticks: list[list[int]]
    calls: list[tuple[int, ...]] = field(default_factory=list)  # model-call batch sizes per step


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()


def run(
    engine, clips: list[np.ndarray], plans=SCHEDULE, max_ticks: int = 2000, pipelined=False
) -> Outcome:
    """Play `plans` through `engine`; see the module docstring. `pipelined`: as the server
    steps, each tick launches its step and then finishes the previous tick's (reports carry
    the finishing tick), so streams close, finalize and reuse slots with a chunk in flight."""
    chunk_bytes = engine.geometry.chunk * engine.geometry.hop_samples * 2
    audio = [pcm16(clips[plan.clip]) for plan in plans]
    ids: list[int | None] = [None] * len(plans)
    sent = [0] * len(plans)
    keeping = [False] * len(plans)  # a context-keeping final is due
    ending = [False] * len(plans)  # the reset final is due
    done = [False] * len(plans)
    outcome = Outcome([[] for _ in plans], [[] for _ in plans])
    in_flight = None  # pipelined: the step launched last tick
    for tick in range(max_ticks):
        if all(done):
            if in_flight is not None:
                assert not engine.finish(in_flight), "results after every stream left"
            return outcome
        for n, plan in enumerate(plans):
            age = tick - plan.start
            if age == 0:
                ids[n] = engine.open_stream()
            if age < 0 or done[n]:
                continue
            if age == plan.close:
                engine.close(ids[n])
                done[n] = True
            elif sent[n] < len(audio[n]):
                piece = audio[n][sent[n] : sent[n] + chunk_bytes]
                sent[n] += len(piece)
                for start in range(0, len(piece), 2 * PACKET):
                    engine.feed(ids[n], piece[start : start + 2 * PACKET])
                if age == plan.keep_final:
                    engine.request_finalize(ids[n], reset=False)
                    keeping[n] = True
            elif not (keeping[n] or ending[n]):
                engine.request_finalize(ids[n], reset=True)
                ending[n] = True
        plan_of = {stream_id: n for n, stream_id in enumerate(ids) if not done[n] and stream_id}
        if pipelined:
            launched = engine.launch()
            ran = [plan_of[stream.stream_id] for stream in launched.streams]
            results = engine.finish(in_flight) if in_flight is not None else []
            in_flight = launched
        else:
            results = engine.step()
            ran = [plan_of[stream_id] for stream_id in engine.last_step.stream_ids]
        for n in ran:
            outcome.chunk_ticks[n].append(tick - plans[n].start)
        firsts = sum(outcome.chunk_ticks[n] == [tick - plans[n].start] for n in ran)
        outcome.calls.append(tuple(size for size in (firsts, len(ran) - firsts) if size))
        for result in results:
            n = plan_of[result.stream_id]
            report = (tick - plans[n].start, result.is_final, result.text, result.token_ids)
            outcome.reports[n].append(report)
            if result.is_final and keeping[n]:
                keeping[n] = False
            elif result.is_final and ending[n]:
                engine.close(ids[n])
                done[n] = True
    raise AssertionError(f"schedule still running after {max_ticks} ticks")


@dataclass
class Comparison:
    """A batched run of the schedule and each of its streams alone on the same engine."""

    batched: Outcome
    alone: list[Outcome]

    def differing(self) -> list[int]:
        """Streams (indices into the schedule) whose reports or chunk ticks changed."""
        return [
            n
            for n, alone in enumerate(self.alone)
            if (self.batched.reports[n], self.batched.chunk_ticks[n])
            != (alone.reports[0], alone.chunk_ticks[0])
        ]

    def later_batches(self) -> set[int]:
        """Batch sizes of the later-chunk model calls (a step's last call)."""
        return {calls[-1] for calls in self.batched.calls if calls}

    def check(self, sentences: tuple[str, ...] | None = None, plans=SCHEDULE) -> None:
        """Assert the contract, and that the run could have shown a difference: every stream
        reported something of its own, the schedule reached the batch shapes it is for, and
        (given `sentences`, for precisions that must recognise them) plain streams' finals
        are their clips' sentences."""
        reports = self.batched.reports
        for n, plan in enumerate(plans):
            finals = [report for report in reports[n] if report[1]]
            expected = 0 if plan.close is not None else 1 + (plan.keep_final is not None)
            assert len(finals) == expected, f"stream {n} (clip {plan.clip}): finals {finals}"
            assert not finals or any(final[3] for final in finals), f"stream {n}: no tokens"
            assert any(not report[1] for report in reports[n]), f"stream {n}: no interim"
            if sentences and expected == 1:
                assert finals[0][2] == sentences[plan.clip], f"stream {n} (clip {plan.clip})"
        distinct = {tuple(map(tuple, report)) for report in reports}
        assert len(distinct) == len(plans), "two streams reported the same: no discrimination"
        assert self.later_batches() >= REQUIRED_LATER_BATCHES, self.batched.calls
        assert any(len(calls) == 2 for calls in self.batched.calls), "no mixed step"
        # every reset but the last to end ran its last chunk beside other streams' chunks
        ends = [plan.start + self.batched.chunk_ticks[n][-1] for n, plan in enumerate(plans)]
        resets = [end for end, plan in zip(ends, plans, strict=True) if plan.close is None]
        shared = sum(self.batched.calls[end][-1] > 1 for end in resets)
        assert shared >= len(resets) - 1, (ends, self.batched.calls)
        assert not self.differing(), f"streams batched != alone: {self.differing()}"


def compare(engine, clips: list[np.ndarray], plans=SCHEDULE, pipelined=False) -> Comparison:
    """Run the schedule batched, then each stream alone (same ticks since its start)."""
    batched = run(engine, clips, plans, pipelined=pipelined)
    alone = [
        run(engine, clips, (Plan(plan.clip, 0, plan.keep_final, plan.close),), pipelined=pipelined)
        for plan in plans
    ]
    assert engine.open_streams == 0
    return Comparison(batched, alone)


def without_ticks(outcome: Outcome) -> list[list[tuple]]:
    """Each stream's reports in order, without when they came."""
    return [[report[1:] for report in reports] for reports in outcome.reports]
