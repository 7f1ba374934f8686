"""A connection holds audio short of the engine's next chunk (`session.py`): the scheduler gets
about one command per chunk, not one per frame, and nothing is lost or late. On an in-process
ASR server, so the engine's feeds can be counted."""

from __future__ import annotations

import asyncio

from server_fixtures import frames, pcm16, served, url

from nemotron_speech.asr.engine import AsrEngine
from nemotron_speech.client import AsrClient
from nemotron_speech.protocol import Transcript
from nemotron_speech.testing.sentences import SENTENCES

FRAME = 640  # 20 ms of PCM16, what browsers and telephony send


async def test_audio_short_of_a_chunk_waits_for_the_frame_that_completes_it(
    asr_model_path, speech_wavs, monkeypatch
):
    """Real-time 20 ms frames, two utterances (a reset between them, the end after them): the
    engine is fed about once per chunk, every final is the sentence (the held audio goes before
    each finalize), and each interim still arrives within 100 ms of the frame that completed
    its chunk."""
    feeds: list[int] = []
    feed = AsrEngine.feed

    def counted_feed(self, stream_id: int, data: bytes) -> None:
        feeds.append(len(data))
        feed(self, stream_id, data)

    monkeypatch.setattr(AsrEngine, "feed", counted_feed)
    clips = [pcm16(speech_wavs[5]), pcm16(speech_wavs[6])]
    sent = finals = 0
    async with served(asr_model_path) as server, AsrClient.connect(url(server)) as client:
        for n, clip in enumerate(clips):
            for frame in frames(clip, FRAME):
                await client.send_audio(frame)
                sent += 1
                await asyncio.sleep(FRAME / 32000)
            await (client.reset() if n == 0 else client.end())
            async for event in client:
                if isinstance(event, Transcript) and event.finalize:
                    assert event.text == SENTENCES[5 + n]
                    finals += 1
                    break
        lags = server.metrics.interim_lag_seconds.collect()[0].samples
    assert finals == 2
    assert sum(feeds) == sum(map(len, clips))
    chunk_bytes = 160 * 32  # R=1: 160 ms chunks
    # each utterance's first chunk goes frame by frame: no chunk has told where the next ends
    first_chunk_frames = 8
    bound = sum(map(len, clips)) / chunk_bytes + first_chunk_frames * len(clips)
    assert len(feeds) <= bound < sent / 4, (len(feeds), bound, sent)
    count = next(s.value for s in lags if s.name.endswith("_count"))
    late = next(s.value for s in lags if s.name.endswith("_bucket") and s.labels["le"] == "0.1")
    assert count > 10 and late == count  # every interim within 100 ms of its audio
