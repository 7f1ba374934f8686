"""What the Pipecat services add over the raw clients, and the TTFS behind `ttfs_p99_latency`.

    python -m benchmarks.services --vllm-python /work/vllm-venv/bin/python   # CPU: test models
    python -m benchmarks.services --asr-url ws://gpu:8080 --llm-url http://spark:8000/v1 \
        --llm-model nemotron-3-nano --asr-model models/asr.nemo --device cuda

- STT over WebSocket (the server started on loopback with the generated test model at right
  context 1, or --asr-url): every test sentence, paced at real time through Silero VAD
  (stop_secs 0.2, as pipecat's TTFS table) into `NemotronSTTService`. TTFS = pipecat's STT TTFB
  metric (speech end -> finalized transcript, VAD wait included); finalize = VAD stop frame ->
  final transcript out of the service. Raw: `AsrClient` streams the same audio plus 0.2 s of
  silence, sends the finalize and waits for the final (a reader task takes the interims).
- STT in-process: the same through `NemotronLocalSTTService`; raw = `AsrEngine.finalize` on an
  engine fed the same audio.
- LLM (needs --vllm-python for the CPU fixture server, or --llm-url): time to the first answer
  token of the scripted "hello" turn, thinking off. Raw: an `AsyncOpenAI` stream; service: an
  `LLMContextFrame` queued into `[NemotronLLMService, tap]` to the first `LLMTextFrame` there.

Rounds alternate raw and service runs on the same server. Overhead = service p50 - raw p50.
Prints one table and writes JSON (default benchmarks/results/services-<device>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from datetime import date
from itertools import chain
from pathlib import Path
from types import SimpleNamespace

from benchmarks.common import RESULTS, ROOT, SPEECH, TINY_MODEL, cpu_model, percentile, write_result
from benchmarks.server_load import start_server
from nemotron_speech.client import AsrClient
from nemotron_speech.endpoints import LLM_MODEL
from nemotron_speech.protocol import SAMPLE_RATE, Transcript
from nemotron_speech.testing.fixture_llm import CASES, SYSTEM_PROMPT
from nemotron_speech.testing.stt_pipeline import (
    FRAME_BYTES,
    FinalsTap,
    conversation,
    metrics,
    of_type,
    paced,
    pcm16,
    run_stt,
    silence,
    wait_for,
)
from nemotron_speech.voice_agent.builder import VAD_STOP_SECS

LLM_TURNS = 20  # per round
# vLLM is busy for a moment after each answer; both paths leave it idle as long before a turn
IDLE_BEFORE_TURN = 0.1


def stats(seconds: list[float]) -> dict[str, float]:
    ms = [1000 * s for s in seconds]
    return {"n": len(ms), **{f"p{q}_ms": round(percentile(ms, q), 2) for q in (50, 90, 99)}}


# -- STT -------------------------------------------------------------------------------------


async def service_turns(stt) -> tuple[list[float], list[float]]:
    """Every sentence through `[Silero VAD, stt]`: (TTFS, VAD stop -> final out) per turn."""
    from pipecat.frames.frames import VADUserStoppedSpeakingFrame
    from pipecat.metrics.metrics import TTFBMetricsData

    audio, _ = conversation(SPEECH)
    tap = FinalsTap()
    frames = chain(paced(audio), wait_for(lambda: len(tap.finals) == len(SPEECH), 10))
    down, _ = await run_stt(stt, lambda _: frames, tap=tap, start_timeout=180)
    stops = [f.timestamp for f in of_type(down, VADUserStoppedSpeakingFrame)]
    if len(stops) != len(tap.times):
        raise SystemExit(f"{len(stops)} VAD stops but {len(tap.times)} finals: VAD split a turn")
    ttfs = [data.value for data in metrics(down, TTFBMetricsData)]
    return ttfs, [final - stop for stop, final in zip(stops, tap.times, strict=True)]


async def raw_client_finalize(url: str, token: str | None) -> list[float]:
    """Each sentence + 0.2 s of silence at real time, then finalize -> final."""
    times = []
    async with AsrClient.connect(url, token=token) as client:
        for wav in SPEECH:
            final = asyncio.get_running_loop().create_future()
            reader = asyncio.create_task(read_until_final(client, final))
            audio = pcm16(wav) + silence(VAD_STOP_SECS)
            start = time.monotonic()
            for offset in range(0, len(audio), FRAME_BYTES):
                await asyncio.sleep(max(0.0, start + offset / (2 * SAMPLE_RATE) - time.monotonic()))
                await client.send_audio(audio[offset : offset + FRAME_BYTES])
            sent = time.perf_counter()
            await client.finalize()
            times.append(await final - sent)
            await reader
    return times


async def read_until_final(client: AsrClient, final: asyncio.Future) -> None:
    async for event in client:
        if isinstance(event, Transcript) and event.finalize:
            final.set_result(time.perf_counter())
            return


def raw_engine_finalize(engine) -> list[float]:
    """Feed each sentence + 0.2 s of silence in 20 ms packets, stepping as the service does;
    time the last packet (the one after which the VAD stops) through the finalize."""
    times = []
    for wav in SPEECH:
        stream = engine.open_stream()
        audio = pcm16(wav) + silence(VAD_STOP_SECS)
        for offset in range(0, len(audio), FRAME_BYTES):
            started = time.perf_counter()
            engine.feed(stream, audio[offset : offset + FRAME_BYTES])
            while engine.step(only=(stream,)) or engine.last_step.batch_size:
                pass
        engine.finalize(stream)
        times.append(time.perf_counter() - started)
        engine.close(stream)
    return times


async def bench_stt(args, url: str) -> dict:
    from nemotron_speech.asr import AsrEngine
    from nemotron_speech.services import NemotronLocalSTTService, NemotronSTTService

    settings = NemotronSTTService.Settings(url=url)
    engine = AsrEngine.load(args.asr_model, right_context=args.right_context, device=args.device)
    engine.warmup()
    results = {name: {"ttfs": [], "finalize": [], "raw": []} for name in ("websocket", "local")}
    for _ in range(args.rounds):
        ws = results["websocket"]
        ws["raw"] += await raw_client_finalize(url, args.asr_token)
        stt = NemotronSTTService(settings=settings, auth_token=args.asr_token)
        ttfs, finalize = await service_turns(stt)
        ws["ttfs"] += ttfs
        ws["finalize"] += finalize
        local = results["local"]
        local["raw"] += raw_engine_finalize(engine)
        stt = NemotronLocalSTTService(
            model_path=args.asr_model, right_context=args.right_context, device=args.device
        )
        ttfs, finalize = await service_turns(stt)
        local["ttfs"] += ttfs
        local["finalize"] += finalize
    return {name: summarize(r["finalize"], r["raw"], ttfs=r["ttfs"]) for name, r in results.items()}


# -- LLM -------------------------------------------------------------------------------------


async def raw_ttft(base_url: str, model: str, api_key: str) -> list[float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key)
    messages = CASES["hello"][0]
    times = []
    for _ in range(LLM_TURNS):
        await asyncio.sleep(IDLE_BEFORE_TURN)
        started = time.perf_counter()
        first = None
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            temperature=0,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
        times.append(first - started)
    await client.close()
    return times


async def service_ttft(base_url: str, model: str, api_key: str) -> list[float]:
    from pipecat.frames.frames import LLMContextFrame, LLMFullResponseEndFrame, LLMTextFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.tests.utils import SleepFrame, run_test

    from nemotron_speech.services import NemotronLLMService

    class FirstText(FrameProcessor):
        def __init__(self):
            super().__init__()
            self.firsts: list[float] = []
            self.ends = 0

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, LLMTextFrame) and len(self.firsts) == self.ends:
                self.firsts.append(time.perf_counter())
            elif isinstance(frame, LLMFullResponseEndFrame):
                self.ends += 1
            await self.push_frame(frame, direction)

    llm = NemotronLLMService(
        base_url=base_url,
        api_key=api_key,
        settings=NemotronLLMService.Settings(
            model=model, system_instruction=SYSTEM_PROMPT, temperature=0
        ),
    )
    tap, starts = FirstText(), []

    def frames():
        for turn in range(LLM_TURNS):
            yield SleepFrame(sleep=IDLE_BEFORE_TURN)
            starts.append(time.perf_counter())
            yield LLMContextFrame(LLMContext([dict(m) for m in CASES["hello"][0][1:]]))
            yield from wait_for(lambda n=turn + 1: tap.ends >= n, 60)

    await run_test(Pipeline([llm, tap]), frames_to_send=frames())
    return [first - start for start, first in zip(starts, tap.firsts, strict=True)]


async def bench_llm(args, base_url: str, model: str) -> dict:
    raw, service = [], []
    await raw_ttft(base_url, model, args.llm_api_key)  # warm-up: the first requests are slower
    for _ in range(args.rounds):
        raw += await raw_ttft(base_url, model, args.llm_api_key)
        service += await service_ttft(base_url, model, args.llm_api_key)
    return {"llm": summarize(service, raw)}


def start_llm(args, log_dir: Path):
    """The vLLM CPU fixture server (the tests' recipe), logging to `log_dir`."""
    from nemotron_speech.llm.launcher import free_port, start_server
    from nemotron_speech.llm.recipe import build_command
    from nemotron_speech.testing.fixture_llm import ensure_fixture_model

    model_dir = ensure_fixture_model(python=args.vllm_python)
    spec = build_command("cpu-fixture", str(model_dir), port=free_port(), python=args.vllm_python)
    return start_server(spec, log_path=log_dir / "vllm.log", timeout=300)


# -- report ----------------------------------------------------------------------------------


def summarize(service: list[float], raw: list[float], ttfs: list[float] | None = None) -> dict:
    row = {"service": stats(service), "raw": stats(raw)}
    row["overhead_p50_ms"] = round(row["service"]["p50_ms"] - row["raw"]["p50_ms"], 2)
    if ttfs is not None:
        row["ttfs"] = stats(ttfs)
    return row


def print_table(rows: dict) -> None:
    print(f"{'service':10} {'measure':34} {'raw p50':>9} {'svc p50':>9} {'overhead':>9} "
          f"{'TTFS p50':>9} {'TTFS p99':>9}")  # fmt: skip
    measures = {
        "websocket": "VAD stop -> final (raw: finalize)",
        "local": "VAD stop -> final (raw: finalize)",
        "llm": "time to first answer token",
    }
    for name, row in rows.items():
        ttfs = row.get("ttfs", {})
        print(
            f"{name:10} {measures[name]:34} {row['raw']['p50_ms']:9.2f} "
            f"{row['service']['p50_ms']:9.2f} {row['overhead_p50_ms']:9.2f} "
            f"{ttfs.get('p50_ms', float('nan')):9.1f} {ttfs.get('p99_ms', float('nan')):9.1f}"
        )
    print("(milliseconds; n per row in the JSON)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asr-url", help="use a running ASR server instead of starting one")
    parser.add_argument("--asr-token", default=None)
    parser.add_argument("--asr-model", type=Path, default=TINY_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--right-context", type=int, default=1)
    parser.add_argument("--llm-url", help="use a running vLLM instead of the CPU fixture")
    parser.add_argument("--llm-model", default=None)
    parser.add_argument("--llm-api-key", default="not-needed")
    parser.add_argument("--vllm-python", default=os.environ.get("NEMOTRON_VLLM_PYTHON"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    server_args = SimpleNamespace(
        model=args.asr_model, right_context=args.right_context, device=args.device,
        batch_wait_ms=0.0,
    )  # fmt: skip
    asr, url = (None, args.asr_url) if args.asr_url else start_server(server_args)
    try:
        rows = asyncio.run(bench_stt(args, url))
    finally:
        if asr:
            asr.terminate()
            asr.wait()
    if args.llm_url:  # started after the STT part, so its start-up does not skew that
        rows |= asyncio.run(bench_llm(args, args.llm_url, args.llm_model or LLM_MODEL))
    elif args.vllm_python:
        with tempfile.TemporaryDirectory() as logs:
            llm = start_llm(args, Path(logs))
            try:
                rows |= asyncio.run(bench_llm(args, llm.base_url, llm.model))
            finally:
                llm.stop()
    print_table(rows)
    result = {
        "date": date.today().isoformat(),
        "hardware": f"{cpu_model()}, {os.cpu_count()} cores, ASR on {args.device}",
        "python": platform.python_version(),
        "asr_model": os.path.relpath(args.asr_model, ROOT),
        "right_context": args.right_context,
        "vad_stop_secs": VAD_STOP_SECS,
        "load_average_1m": os.getloadavg()[0],
        "rows": rows,
    }
    out = args.out or RESULTS / f"services-{args.device}.json"
    write_result(out, result)


if __name__ == "__main__":
    main()
