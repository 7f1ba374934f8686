"""A connection holds audio short of the engine's next chunk (`session.py`): the scheduler gets
about one command per chunk, not one per frame, and nothing is lost. On an in-process ASR
server, so the engine's feeds can be counted."""

from __future__ import annotations

import asyncio

from server_fixtures import frames, pcm16, served, url

from nemotron_speech.asr.engine import AsrEngine
from nemotron_speech.client import AsrClient
from nemotron_speech.protocol import Transcript
from nemotron_speech.testing.sentences import SENTENCES

FRAME = 639  # ~20 ms of PCM16 (browsers and telephony send 20 ms), odd: samples split across frames
CHUNK_BYTES = 160 * 32  # R=1: 160 ms chunks
FIRST_CHUNK_FRAMES = 8  # an utterance's first chunk goes frame by frame: no step has said more


async def answer(client: AsrClient, finalize: bool) -> Transcript:
    async for event in client:
        if isinstance(event, Transcript) and event.is_final and event.finalize == finalize:
            return event
    raise AssertionError(f"closed: {client.close_code} {client.close_reason}")


async def test_audio_short_of_a_chunk_waits_for_the_frame_that_completes_it(
    asr_model_path, speech_wavs, monkeypatch
):
    """Real-time frames of odd size, two utterances with a flush in the first, a reset between
    them and the end after: the engine is fed about once per chunk (at most the chunks, plus
    each utterance's first chunk frame by frame, plus one release per flush or finalize), no
    feed held a frame past the one that made a chunk ready, every byte arrives, the flush
    answers with a prefix of the sentence, and every final is the sentence (held audio goes
    first)."""
    feeds: list[int] = []
    held_past_a_chunk: list[tuple[int, int, int]] = []  # (bytes fed before, fed, chunk ready at)
    feed = AsrEngine.feed

    def counted_feed(self, stream_id: int, data: bytes) -> None:
        before, ready_at = self._stream(stream_id).client_bytes, self.next_chunk_bytes(stream_id)
        # all but the last frame of a feed were short of the next chunk: none waited past it
        if ready_at is not None and before + len(data) - FRAME >= ready_at:
            held_past_a_chunk.append((before, len(data), ready_at))
        feeds.append(len(data))
        feed(self, stream_id, data)

    monkeypatch.setattr(AsrEngine, "feed", counted_feed)
    clips = [pcm16(speech_wavs[5]), pcm16(speech_wavs[6])]
    async with served(asr_model_path) as server, AsrClient.connect(url(server)) as client:
        for n, clip in enumerate(clips):
            pieces = frames(clip, FRAME)
            for index, frame in enumerate(pieces):
                await client.send_audio(frame)
                await asyncio.sleep(len(frame) / 32000)
                if n == 0 and index == len(pieces) // 2:
                    await client.flush()
                    flushed = await answer(client, finalize=False)
                    assert flushed.text and SENTENCES[5].startswith(flushed.text), flushed
            await (client.reset() if n == 0 else client.end())
            assert (await answer(client, finalize=True)).text == SENTENCES[5 + n]
    total = sum(map(len, clips))
    assert sum(feeds) == total and not held_past_a_chunk, held_past_a_chunk
    releases = 3  # the flush's and each finalize's
    bound = total / CHUNK_BYTES + len(clips) * FIRST_CHUNK_FRAMES + releases
    assert len(feeds) <= bound, (len(feeds), bound, total / FRAME)
