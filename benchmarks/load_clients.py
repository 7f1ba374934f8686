"""The clients of `server_load`: the test sentences, the calibration pass that learns when each
interim text becomes available, and the clients that stream the sentences at real time.

Kept apart from the rows and the command line because `--client-processes` runs `client_group`
in spawned processes: what they import and pickle (`Utterance`, `ClientStats`) lives here.
"""

from __future__ import annotations

import asyncio
import time
import wave
from dataclasses import dataclass, field

import numpy as np

from benchmarks.common import SPEECH
from nemotron_speech.client import AsrClient
from nemotron_speech.protocol import SAMPLE_RATE, SAMPLE_WIDTH, Transcript

PACKET_S = 0.02
PACKET_BYTES = int(SAMPLE_RATE * PACKET_S) * SAMPLE_WIDTH


@dataclass
class Utterance:
    audio: bytes
    text: str
    available_after: dict[str, int] = field(default_factory=dict)  # interim -> packet index
    final: str = ""  # the final of this sentence streamed alone (calibration)
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


def timed_packet(available_after: dict[str, int], text: str, latest: int) -> int | None:
    """The packet after which an interim's `text` was available in the solo run, if its lag can
    be timed from it: None for a text the solo run never showed, and for one it showed before
    the sentence's latest timed interim (`latest`; -1 at the start). Random weights near logit
    ties can send a text that goes back to an earlier one; timed from that earlier packet it
    would read as up to a sentence of lag that no audio waited for."""
    packet = available_after.get(text)
    return None if packet is None or packet < latest else packet


class ClientStats:
    def __init__(self) -> None:
        self.lag: list[float] = []
        self.exact_lag: list[float] = []  # of sentences whose final equals the solo run's
        self.finalize: list[float] = []
        self.exact = 0
        self.finals = 0
        self.errors: list[str] = []
        self.interims = 0
        self.unmatched = 0  # interims whose text the calibration pass never saw
        self.behind = 0  # interims whose text the solo run had before an earlier interim's
        self.tokens = 0  # of the finalized sentences, streamed alone
        self.samples = 0


async def calibrate(url: str, token: str | None, utterances: list[Utterance]) -> None:
    """Learn, for each sentence, after which 20 ms packet each interim text becomes available:
    stream it alone with a flush after every packet (the answer covers all complete chunks
    received). Under load the same texts arrive later; the difference is the lag."""
    async with AsrClient.connect(url, token=token) as client:
        for utterance in utterances:
            for index, offset in enumerate(range(0, len(utterance.audio), PACKET_BYTES)):
                await client.send_audio(utterance.audio[offset : offset + PACKET_BYTES])
                await client.flush()
                event = await client.recv()
                while not (isinstance(event, Transcript) and event.is_final):
                    event = await client.recv()
                if event.text:
                    utterance.available_after.setdefault(event.text, index)
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
    sent_at: list[float] = []  # send time of each packet of the current sentence
    lag: list[float] = []  # of the current sentence's interims
    current = {"utterance": utterances[0], "end_sent": 0.0, "latest": -1}

    async def receive() -> None:
        async for event in client:
            now = time.perf_counter()
            utterance = current["utterance"]
            if not isinstance(event, Transcript):
                stats.errors.append(event.message)
            elif not event.is_final:
                stats.interims += 1
                packet = timed_packet(utterance.available_after, event.text, current["latest"])
                stats.unmatched += event.text not in utterance.available_after
                stats.behind += packet is None and event.text in utterance.available_after
                if packet is not None and packet < len(sent_at):
                    current["latest"] = packet
                    lag.append(now - sent_at[packet])
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
            sent_at.clear()
            lag.clear()
            current["latest"] = -1
            start = time.perf_counter()
            for k, offset in enumerate(range(0, len(utterance.audio), PACKET_BYTES)):
                await asyncio.sleep(max(0.0, start + k * PACKET_S - time.perf_counter()))
                sent_at.append(time.perf_counter())
                await client.send_audio(utterance.audio[offset : offset + PACKET_BYTES])
            final.clear()
            current["end_sent"] = time.perf_counter()
            await getattr(client, request)()
            await asyncio.wait_for(final.wait(), 30)
    receiver.cancel()


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
