"""The clients of `server_load`: the test sentences, the solo pass that learns each one's final
alone, and the clients that stream the sentences at real time and time every answer.

Kept apart from the rows and the command line because `--client-processes` runs `client_group`
in spawned processes: what they import and pickle (`Utterance`, `ClientStats`) lives here.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import wave
from dataclasses import dataclass

import numpy as np

from benchmarks.common import SPEECH
from nemotron_speech.client import AsrClient
from nemotron_speech.protocol import BYTES_PER_MS, SAMPLE_RATE, SAMPLE_WIDTH, Transcript

PACKET_S = 0.02
PACKET_BYTES = int(SAMPLE_RATE * PACKET_S) * SAMPLE_WIDTH


@dataclass
class Utterance:
    audio: bytes
    text: str
    final: str = ""  # the final of this sentence streamed alone (`solo_finals`)
    tokens: int = 0  # ... and its token count, from an in-process engine of the same kind
    solo_final: str = ""  # ... and that engine's final (must equal `final`)

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(self.audio, "<i2").astype(np.float32) / 32768


def load_utterances() -> list[Utterance]:
    from nemotron_speech.testing.sentences import SENTENCES

    utterances = []
    for path in SPEECH:
        with wave.open(str(path), "rb") as wav:
            audio = wav.readframes(wav.getnframes())
        utterances.append(Utterance(audio, SENTENCES[int(path.stem)]))
    return utterances


class Sends:
    """When each packet of the current sentence was sent, by the connection's audio (bytes from
    its first) once it was: an interim's `audio_ms` says how much audio its text needed, and
    its lag runs from the send of the packet that completed that much."""

    def __init__(self) -> None:
        self.total = 0  # bytes sent on the connection, over every sentence
        self._before = 0  # ... before this sentence
        self._ends: list[int] = []  # of this sentence's packets: `total` after each
        self._times: list[float] = []

    def add(self, size: int, at: float) -> None:
        self.total += size
        self._ends.append(self.total)
        self._times.append(at)

    def clear(self) -> None:
        """A new sentence: an answer needs only its audio (the last one's final has come)."""
        self._before = self.total
        self._ends.clear()
        self._times.clear()

    def time_of(self, audio_ms: float) -> float | None:
        """When the packet completing `audio_ms` of the connection's audio was sent; None if that
        audio was not sent in this sentence."""
        needed = audio_ms * BYTES_PER_MS
        index = bisect.bisect_left(self._ends, needed)
        return self._times[index] if needed > self._before and index < len(self._times) else None


class ClientStats:
    def __init__(self) -> None:
        self.lag: list[float] = []
        self.exact_lag: list[float] = []  # of sentences whose final equals the solo run's
        self.finalize: list[float] = []
        self.exact = 0
        self.finals = 0
        self.errors: list[str] = []
        self.interims = 0
        self.untimed = 0  # interims of chunks run after the sentence's `end` (no `audio_ms`)
        self.tokens = 0  # of the finalized sentences, streamed alone
        self.samples = 0  # ... their audio
        self.sent_bytes = 0  # all audio sent


async def solo_finals(url: str, token: str | None, utterances: list[Utterance]) -> None:
    """Stream each sentence alone, at once, and keep its final: the load's finals are compared
    with it (batching must not change a text)."""
    async with AsrClient.connect(url, token=token) as client:
        for utterance in utterances:
            await client.send_audio(utterance.audio)
            await client.end()
            event = await client.recv()
            while not (isinstance(event, Transcript) and event.finalize):
                event = await client.recv()
            utterance.final = event.text


async def run_client(
    url: str,
    token: str | None,
    utterances: list[Utterance],
    first: int,
    deadline: float,
    delay: float,
    stats: ClientStats,
    request: str = "end",
) -> None:
    """Stream sentences at real time until `deadline`, each ended by `request` (`end`: a
    reset; `finalize`: context kept); time every interim and final."""
    await asyncio.sleep(delay)
    client = await AsrClient.connect(url, token=token)
    final = asyncio.Event()
    sends = Sends()
    lag: list[float] = []  # of the current sentence's interims
    current = {"utterance": utterances[0], "end_sent": 0.0}

    async def receive() -> None:
        async for event in client:
            now = time.perf_counter()
            utterance = current["utterance"]
            if not isinstance(event, Transcript):
                stats.errors.append(event.message)
            elif not event.is_final:
                stats.interims += 1
                sent = None if event.audio_ms is None else sends.time_of(event.audio_ms)
                if sent is None:
                    stats.untimed += 1
                else:
                    lag.append(now - sent)
            elif event.finalize:
                stats.finalize.append(now - current["end_sent"])
                stats.finals += 1
                stats.exact += event.text == utterance.final
                stats.lag += lag
                stats.exact_lag += lag if event.text == utterance.final else []
                stats.tokens += utterance.tokens
                stats.samples += len(utterance.audio) // 2
                final.set()

    receiver = asyncio.create_task(receive())
    index = first
    async with client:
        while time.perf_counter() < deadline:
            current["utterance"] = utterance = utterances[index % len(utterances)]
            index += 1
            sends.clear()
            lag.clear()
            start = time.perf_counter()
            for k, offset in enumerate(range(0, len(utterance.audio), PACKET_BYTES)):
                await asyncio.sleep(max(0.0, start + k * PACKET_S - time.perf_counter()))
                packet = utterance.audio[offset : offset + PACKET_BYTES]
                sends.add(len(packet), time.perf_counter())
                await client.send_audio(packet)
            final.clear()
            current["end_sent"] = time.perf_counter()
            await getattr(client, request)()
            await asyncio.wait_for(final.wait(), 30)
    receiver.cancel()
    stats.sent_bytes = sends.total


def client_group(
    url: str,
    token: str | None,
    utterances: list[Utterance],
    members: list[int],
    n: int,
    seconds: float,
    request: str,
) -> list[ClientStats]:
    """Run clients `members` (of `n`) for `seconds` in this process's own event loop."""

    async def run() -> list[ClientStats]:
        deadline = time.perf_counter() + seconds
        stats = [ClientStats() for _ in members]
        await asyncio.gather(*(
            run_client(url, token, utterances, i, deadline, (i / n) * 0.16, stat, request)
            for i, stat in zip(members, stats, strict=True)
        ))  # fmt: skip
        return stats

    return asyncio.run(run())
