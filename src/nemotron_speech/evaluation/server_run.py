"""Decoding an evaluation set through a running ASR server, as a deployment serves it.

Needs only `websockets` and the `eval` extra (no torch): each utterance is one connection that
sends PCM16 in 20 ms frames (by the clock in real time with `realtime`, else as fast as the
socket takes them), then `end`, and waits for the final that answers it. Up to `streams`
connections run at once. The right context is whatever the server runs; its `ready` message
says which.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from nemotron_speech.client import AsrClient, AsrConnectionError
from nemotron_speech.evaluation.dataset import PACKET_BYTES, Utterance, pcm16, read_samples
from nemotron_speech.evaluation.report import Decoded, Run, progress
from nemotron_speech.protocol import SAMPLE_RATE, SAMPLE_WIDTH, Error, Ready

PACKET_SECONDS = PACKET_BYTES / (SAMPLE_RATE * SAMPLE_WIDTH)
BUFFER_FULL = 1008


class ServerEvalError(RuntimeError):
    """The server refused, failed or answered an utterance with an error."""


def run_server(
    url: str,
    utterances: Sequence[Utterance],
    token: str | None,
    streams: int,
    realtime: bool,
) -> Run:
    return asyncio.run(_run(url, utterances, token, streams, realtime))


async def _run(
    url: str, utterances: Sequence[Utterance], token: str | None, streams: int, realtime: bool
) -> Run:
    results: list[Decoded] = [Decoded("")] * len(utterances)
    ready: list[Ready] = []
    limit = asyncio.Semaphore(streams)

    async def one(index: int, bar) -> None:
        async with limit:
            results[index] = await _utterance(url, utterances[index], token, realtime, ready)
            bar.update()

    started = time.perf_counter()
    with progress(len(utterances), f"{url} {'real time' if realtime else 'unpaced'}") as bar:
        # the first failure ends the run; asyncio.run cancels the other connections
        await asyncio.gather(*(one(index, bar) for index in range(len(utterances))))
    seconds = time.perf_counter() - started
    server = ready[0]
    return Run(url, server.right_context, server.chunk_ms, "as deployed", results, seconds)


async def _utterance(
    url: str, utterance: Utterance, token: str | None, realtime: bool, ready: list[Ready]
) -> Decoded:
    audio = pcm16(read_samples(utterance))
    try:
        client = await AsrClient.connect(url, token=token)
    except AsrConnectionError as exc:
        raise ServerEvalError(f"{utterance.source}: {exc}") from None
    ready.append(client.ready)
    async with client:
        final = asyncio.create_task(_final(client, utterance))
        try:
            await _send(client, audio, realtime)
            end_sent = time.perf_counter()
            await client.end()
        except AsrConnectionError:
            await final  # raises, with the reason the server gave for closing
            raise
        text = await final
        return Decoded(text, None, time.perf_counter() - end_sent)


async def _send(client: AsrClient, audio: bytes, realtime: bool) -> None:
    started = time.perf_counter()
    for index, offset in enumerate(range(0, len(audio), PACKET_BYTES)):
        if realtime:  # by the clock, so sleeps cannot drift
            await asyncio.sleep(max(0.0, started + index * PACKET_SECONDS - time.perf_counter()))
        await client.send_audio(audio[offset : offset + PACKET_BYTES])


async def _final(client: AsrClient, utterance: Utterance) -> str:
    """The text of the final that answers `end`; any error or close is an error naming the
    utterance."""
    try:
        while True:
            event = await client.recv()
            if isinstance(event, Error):
                raise ServerEvalError(f"{utterance.source}: server error: {event.message}")
            if event.is_final and event.finalize:
                return event.text
    except AsrConnectionError as exc:
        hint = ""
        if exc.code == BUFFER_FULL:
            hint = (
                "; the server fell behind unpaced audio: rerun with --realtime or fewer --streams"
            )
        raise ServerEvalError(f"{utterance.source}: {exc}{hint}") from None
