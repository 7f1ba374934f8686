"""Voice-to-voice latency of the bundled bot, per stage, over real servers.

    python -m benchmarks.voice_to_voice --asr-url ws://HOST:8080 --llm-url http://HOST:8000/v1 \
        [--llm-model nemotron-3-nano] [--tts kokoro|espeak] [--sentences 0,2,4] [--repeat 3]

Each turn is one fresh `build_bot` pipeline on a `WavTransport` that plays a test sentence in
real time (espeak speech of `nemotron_speech.testing.sentences`), so the numbers are what a
browser user gets minus the network and the browser's jitter buffer (measure those with
tests/test_browser_e2e.py). Per turn, pipecat's `UserBotLatencyObserver` splits speech end ->
first bot audio into endpointing wait (VAD stop_secs), transcription (STT finalize), turn
detection (smart-turn), LLM inference (first token), speech synthesis (first audio) and the
rest. Prints a table (median and p90 per stage) and writes JSON.

With the test servers (generated ASR model, fixture LLM on vLLM CPU) it measures the pipeline's
own overhead; on a Spark with the real models, the production latency.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
from datetime import date
from pathlib import Path

from pipecat.frames.frames import EndFrame

from benchmarks.common import RESULTS, SPEECH, percentile, write_result
from nemotron_speech.testing.sentences import SENTENCES
from nemotron_speech.voice_agent import contributions
from nemotron_speech.voice_agent.bot import build_bot
from nemotron_speech.voice_agent.config import BotConfig, add_arguments
from nemotron_speech.voice_agent.wav_transport import WavTransport, load_pcm16

TURN_TIMEOUT_SECS = 20
STAGES = (
    "endpointing_wait",
    "transcription",
    "turn_detection",
    "llm_inference",
    "sentence_aggregation",
    "speech_synthesis",
)


async def one_turn(config: BotConfig, sentence: int) -> dict | None:
    """Play one sentence to a fresh bot; the turn's breakdown as {stage: secs, total: secs}.

    None when the bot never spoke (the fixture LLM can answer an unscripted prompt with nothing
    speakable, e.g. a malformed tool call).
    """
    transport = WavTransport(load_pcm16(SPEECH[sentence]), lead_secs=0.5)
    agent = build_bot(transport, config)
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(TURN_TIMEOUT_SECS):
            while not agent.latency.breakdowns:
                await asyncio.sleep(0.05)
    except TimeoutError:
        print(f"sentence {sentence}: no bot speech within {TURN_TIMEOUT_SECS} s", file=sys.stderr)
        return None
    finally:
        await agent.worker.queue_frame(EndFrame())
        await asyncio.wait_for(task, 30)
    breakdown = agent.latency.breakdowns[0]
    parts = contributions(breakdown)
    return {
        "sentence": sentence,
        "text": SENTENCES[sentence],
        "total": breakdown.total_secs,
        **parts,
    }


def summarize(turns: list[dict]) -> dict[str, dict[str, float]]:
    keys = [*STAGES, "total"]
    return {
        key: {
            "median": percentile([t.get(key, 0.0) for t in turns], 50),
            "p90": percentile([t.get(key, 0.0) for t in turns], 90),
        }
        for key in keys
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", default="0,2,4,11,14", help="test sentence numbers")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/...)")
    add_arguments(parser)
    args = parser.parse_args()
    config = BotConfig.from_args(args)
    config.greeting = ""  # a turn is timed from the user's speech, not from connect

    turns, silent = [], []
    for _ in range(args.repeat):
        for sentence in map(int, args.sentences.split(",")):
            turn = await one_turn(config, sentence)
            (turns.append(turn) if turn else silent.append(sentence))
    summary = summarize(turns)

    print(f"\n{'stage':24} {'median s':>9} {'p90 s':>9}   ({len(turns)} turns)")
    for key, stats in summary.items():
        print(f"{key:24} {stats['median']:9.3f} {stats['p90']:9.3f}")
    record = {
        "date": date.today().isoformat(),
        "host": platform.node(),
        "machine": platform.machine(),
        "config": {k: v for k, v in vars(config).items() if k != "system_prompt"},
        "summary": summary,
        "silent_turns": silent,
        "turns": turns,
    }
    out = args.out or RESULTS / f"voice-to-voice-{config.tts}.json"
    write_result(out, record)


if __name__ == "__main__":
    asyncio.run(main())
