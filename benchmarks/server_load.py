"""ASR server load benchmark: N concurrent clients streaming speech at real time.

    python -m benchmarks.server_load                         # CPU, generated test model, N=1,8,32
    python -m benchmarks.server_load --device cuda --full-size --clients 1,64,256,400 \
        --client-processes 8

Starts the server (or uses --url), then for each N runs N clients for --seconds. Each client
sends 20 ms PCM16 packets paced by the clock, cycling through the test sentences; after each
sentence it sends `end` and waits for the final. Per N it reports:
- lag: for every interim, arrival time minus the send time of the packet after which that text
  was available. A calibration pass (one client, a flush after every packet, before the
  load) finds that packet for each text; batching gives the same texts at any load. Interims
  whose text that pass never saw are counted (`unmatched_interims`); a model that emits
  nothing sends no interims, and the lag is then reported as missing, not as a number.
  The server's own lag (`asr_interim_lag_seconds`: frame that made a chunk ready arrived ->
  its interim sent) is reported beside it from /metrics, with no text matching.
  Counted for sentences that got their final; `exact_lag_ms` only for those whose final equals
  the solo run's: random weights sit near logit ties, so in a batch a token can come a chunk
  later than alone and its text then looks 160 ms late, the weights' doing, not the server's.
- tokens per 80 ms frame: the server sends text, not tokens, so the benchmark streams every
  sentence alone through an engine of the server's configuration in this process (the same
  engine that calibrates random weights) and counts its tokens; a row's emission is that of
  the sentences whose finals it received (exact for the exact finals, the solo run's for the
  others). A random-weight (--full-size) row outside 0.2-0.5 is marked invalid.
- finalize: `end` (or `finalize`, with --final-request finalize) sent -> final received.
- exact: finals equal to the final of the same sentence streamed alone (for the test model that
  is the sentence itself; with --full-size random weights, garbage, but the same garbage).
- server CPU (% of one core, from /proc, summed over the server and all its descendant
  processes, e.g. --workers fronts and the engine process; in brackets the busiest process, the
  bound when it nears 100; the JSON has every process and the main thread, a one-process
  server's event loop) and that over N (CPU per stream), this process's CPU (the clients),
  GPU utilisation and memory (sampled with nvidia-smi when on cuda; null where nvidia-smi does
  not exist), steps per second, mean batch size and step time, the scheduler's seconds per
  second by activity (from /metrics), and the machine's 1-minute load average at the end (other
  work on the machine skews results).
With --profile-seconds S, py-spy records S seconds of the server's busiest process in each row
once its clients are connected (`server_profile.py`; raw stacks beside the JSON, top functions
in the row).
Prints one table and writes JSON (default benchmarks/results/server-load-<device>.json).
The clients run in this process: on a small machine they compete with the server for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.common import (
    RESULTS,
    ROOT,
    SPEECH,
    TINY_MODEL,
    GpuSampler,
    cpu_model,
    percentile,
    process_tree_cpu_seconds,
    write_result,
)
from benchmarks.random_weights import emission, invalid_note
from benchmarks.server_profile import ServerProfiler, print_summary, py_spy
from nemotron_speech.client import AsrClient
from nemotron_speech.protocol import SAMPLE_RATE, SAMPLE_WIDTH, Transcript
from nemotron_speech.server.launcher import AsrServerProcess, read_metrics, start_server
from nemotron_speech.server.metrics import LAG_BUCKETS, SCHEDULER_ACTIVITIES

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
    current = {"utterance": utterances[0], "end_sent": 0.0}

    async def receive() -> None:
        async for event in client:
            now = time.perf_counter()
            utterance = current["utterance"]
            if not isinstance(event, Transcript):
                stats.errors.append(event.message)
            elif not event.is_final:
                stats.interims += 1
                packet = utterance.available_after.get(event.text)
                stats.unmatched += packet is None
                if packet is not None and packet < len(sent_at):
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


def cpu_seconds(pid: int | None) -> tuple[dict[int, float], float]:
    """CPU seconds of the server and each of its descendants, and of its main thread (a
    one-process server's event loop)."""
    return ({}, float("nan")) if pid is None else process_tree_cpu_seconds(pid)


def cpu_percent(before: tuple, after: tuple, wall: float) -> dict:
    """The server's CPU over `wall` seconds: in all, per process (busiest first: an engine
    process or a front at 100 % is the bound), and its main thread's."""
    per_process = sorted(
        (100 * (after[0][p] - before[0][p]) / wall for p in after[0] if p in before[0]),
        reverse=True,
    )
    total = 100 * (sum(after[0].values()) - sum(before[0].values())) / wall if after[0] else None
    return {
        "server_cpu_percent": None if total is None else round(total, 1),
        "process_cpu_percent": [round(x, 1) for x in per_process],
        "event_loop_cpu_percent": round(100 * (after[1] - before[1]) / wall, 1),
    }


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


def run_level(args, url: str, n: int, pid: int | None, utterances) -> dict:
    """N clients, spread over --client-processes client processes (one event loop each)."""
    token, seconds, request = args.token, args.seconds, args.final_request
    before, cpu_before, started = read_metrics(url), cpu_seconds(pid), time.perf_counter()
    own_before = sum(os.times()[:4])  # this process and its finished children
    groups = [
        list(range(k, n, args.client_processes)) for k in range(min(args.client_processes, n))
    ]
    profiler = profile_row(args, url, pid, n)
    if profiler:
        profiler.start()
    with GpuSampler(gpu_index(args.device)) as gpu:
        if len(groups) == 1:
            stats = client_group(url, token, utterances, groups[0], n, seconds, request)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(len(groups), mp_context=context) as pool:
                futures = [
                    pool.submit(client_group, url, token, utterances, g, n, seconds, request)
                    for g in groups
                ]
                stats = [stat for future in futures for stat in future.result()]
    wall = time.perf_counter() - started
    after, cpu_after, own_after = read_metrics(url), cpu_seconds(pid), sum(os.times()[:4])
    if profiler:  # after the row's figures: a profile that outlasts the clients must not count
        profiler.join()
    steps = after["asr_steps_total"] - before["asr_steps_total"]
    batch = after["asr_step_batch_size_sum"] - before["asr_step_batch_size_sum"]
    step_s = after["asr_step_seconds_sum"] - before["asr_step_seconds_sum"]
    lag = [x for s in stats for x in s.lag]
    exact_lag = [x for s in stats for x in s.exact_lag]
    finalize = [x for s in stats for x in s.finalize]
    cpu = cpu_percent(cpu_before, cpu_after, wall)
    tokens, samples = sum(s.tokens for s in stats), sum(s.samples for s in stats)
    return {
        "clients": n,
        "client_processes": len(groups),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "seconds": round(wall, 2),
        "lag_ms": percentiles(lag),
        "exact_lag_ms": percentiles(exact_lag),
        "server_lag": server_lag(before, after),
        "final_request": request,
        "finalize_ms": percentiles(finalize),
        "finals": sum(s.finals for s in stats),
        "exact": sum(s.exact for s in stats),
        "errors": sum(len(s.errors) for s in stats),
        "interims": sum(s.interims for s in stats),
        "unmatched_interims": sum(s.unmatched for s in stats),
        **emission(tokens, samples, args.full_size),
        **cpu,
        "server_cpu_percent_per_stream": (
            None if cpu["server_cpu_percent"] is None else round(cpu["server_cpu_percent"] / n, 3)
        ),
        "client_cpu_percent": round(100 * (own_after - own_before) / wall, 1),
        "scheduler_seconds_per_s": {
            activity: round((after[key] - before[key]) / wall, 3)
            for activity in SCHEDULER_ACTIVITIES
            if (key := f'asr_scheduler_seconds_total{{activity="{activity}"}}') in after
        },
        "steps_per_s": round(steps / wall, 1),
        "mean_batch": round(batch / steps, 2) if steps else 0.0,
        "mean_step_ms": round(1000 * step_s / steps, 2) if steps else 0.0,
        "gpu": gpu.summary() if args.device.startswith("cuda") else None,
        "profile": profiler.summary() if profiler else None,
    }


def profile_row(args, url: str, pid: int | None, n: int) -> ServerProfiler | None:
    """With --profile-seconds, py-spy on the server's busiest process once all N are in."""
    if not args.profile_seconds or pid is None:
        return None
    path = args.out.with_name(f"{args.out.stem}-n{n}-profile.txt")
    return ServerProfiler(url, pid, n, args.profile_seconds, args.seconds, path)


def server_lag(before: dict, after: dict) -> dict:
    """The server's own interim lag (`asr_interim_lag_seconds`: the audio frame that made a
    chunk ready arrived -> its interim sent): no text matching, so random weights cannot skew
    it. From the histogram's buckets: the share within 100 ms and bounds on p50 and p99."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    count = delta("asr_interim_lag_seconds_count")
    if not count:
        return {"n": 0}
    cumulative = {
        bound: delta(f'asr_interim_lag_seconds_bucket{{le="{bound}"}}') / count
        for bound in map(str, LAG_BUCKETS)
    }
    at_most = {
        q: next((float(b) * 1000 for b, share in cumulative.items() if share >= q), None)
        for q in (0.5, 0.99)
    }
    return {
        "n": int(count),
        "mean_ms": round(1000 * delta("asr_interim_lag_seconds_sum") / count, 1),
        "within_100_ms": round(cumulative["0.1"], 4),
        "p50_at_most_ms": at_most[0.5],
        "p99_at_most_ms": at_most[0.99],
    }


def gpu_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Milliseconds of `values` (seconds); None (JSON null) for none."""
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {
        "p50": round(1000 * percentile(values, 50), 1),
        "p99": round(1000 * percentile(values, 99), 1),
        "max": round(1000 * max(values), 1),
        "n": len(values),
    }


def solo_runs(args, work: Path, utterances: list[Utterance]) -> None:
    """Count each sentence's tokens streamed alone through an engine of the server's
    configuration (model, precision, graphs on a GPU, right context) in this process. With
    --full-size, first calibrate the random weights on that engine to emit like speech on the
    test sentences (what the clients send), then save them (fp32: the server casts them) for
    the server."""
    import torch

    from benchmarks.random_weights import calibrate_blank_bias, full_size, restorer
    from nemotron_speech.asr import AsrEngine
    from nemotron_speech.asr.model import load_nemo_model

    if args.full_size:
        model = full_size(work, args.device)
    else:
        model = load_nemo_model(args.model, device=args.device)
    restore = restorer(model)
    engine = AsrEngine(
        model,
        right_context=args.right_context,
        precision=args.precision,
        cuda_graphs=args.device.startswith("cuda"),
        max_graph_batch=1,  # one stream at a time
    )
    if args.full_size:
        # each sentence from a fresh stream, as the clients send them (reset after each)
        calibration = calibrate_blank_bias(engine, [u.samples for u in utterances])
        print(f"calibration at {args.precision}: {calibration}", flush=True)
        args.model_description = (
            f"full-size architecture, random weights, blank bias {calibration['blank_bias']} "
            f"for ~0.3 tokens per 80 ms frame on the test sentences at R={args.right_context}, "
            f"{args.precision}"
        )
    for utterance in utterances:
        final = engine.transcribe(utterance.samples)
        utterance.tokens, utterance.solo_final = len(final.token_ids), final.text
    if args.full_size:
        restore(keep_calibration=True)
        args.model = work / "full-size.nemo"
        model.save_to(str(args.model))
    del engine, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the server's memory


def serve(args) -> AsrServerProcess:
    """The server on a free port, its log on this process's stderr."""
    workers = ("--workers", str(args.workers)) if args.workers != 1 else ()
    workers += ("--engine-process",) if args.engine_process else ()
    workers += ("--engine-processes", str(args.engine_processes))
    return start_server(
        "--right-context", str(args.right_context), "--device", args.device,
        "--max-streams", "4096", "--max-message-bytes", str(2**20),
        "--batch-wait-ms", str(args.batch_wait_ms), "--precision", args.precision, *workers,
        model=args.model, timeout=1800,
        extra_env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use a running server instead of starting one")
    parser.add_argument("--token", default=None)
    parser.add_argument("--model", type=Path, default=TINY_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--right-context", type=int, default=1)
    parser.add_argument("--batch-wait-ms", type=float, default=0.0, help="server option")
    parser.add_argument("--precision", default="fp32", help="server option: fp32, bf16, fp16")
    parser.add_argument("--workers", type=int, default=1, help="server option: processes")
    parser.add_argument("--engine-process", action="store_true", help="server option")
    parser.add_argument("--engine-processes", type=int, default=1, help="server option")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=20.0, help="per N")
    parser.add_argument(
        "--client-processes", type=int, default=1, help="spread the clients over K processes"
    )
    parser.add_argument(
        "--full-size", action="store_true",
        help="serve the ~0.6 B architecture with random weights (built, calibrated, saved first)",
    )  # fmt: skip
    parser.add_argument(
        "--final-request", default="end", choices=("end", "finalize"),
        help="what ends each sentence: end (a reset) or finalize (context kept)",
    )  # fmt: skip
    parser.add_argument(
        "--profile-seconds", type=int, default=0,
        help="py-spy the server's busiest process this long in each row (see server_profile)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.out = args.out or RESULTS / f"server-load-{args.device}.json"
    if args.profile_seconds:
        if args.url:
            parser.error("--profile-seconds profiles a server it starts; drop --url")
        if not 1 <= args.profile_seconds < args.seconds:
            parser.error("--profile-seconds must be at least 1 and less than --seconds")
        py_spy()  # exits with how to install it, before any model is built

    work = tempfile.TemporaryDirectory()
    utterances = load_utterances()
    solo_runs(args, Path(work.name), utterances)
    server = None if args.url else serve(args)
    url = args.url or server.url
    asyncio.run(calibrate(url, args.token, utterances))
    wrong = sum(u.final != u.text for u in utterances)
    if wrong and not args.full_size:
        print(f"warning: {wrong} sentences not transcribed exactly alone", file=sys.stderr)
    differ = sum(u.final != u.solo_final for u in utterances)
    if differ:
        print(
            f"warning: {differ} sentences' server finals differ from the in-process engine's; "
            "their token counts are the engine's",
            file=sys.stderr,
        )
    rows = []
    try:
        for n in (int(x) for x in args.clients.split(",")):
            rows.append(run_level(args, url, n, server.process.pid if server else None, utterances))
            print_row(rows[-1], header=len(rows) == 1)
    finally:
        if server is not None:
            server.stop(timeout=30)
        work.cleanup()
    if args.device.startswith("cuda") and not shutil.which("nvidia-smi"):
        print("GPU utilisation not measured: nvidia-smi does not exist here (gpu: null)")
    result = {
        "date": date.today().isoformat(),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "device": args.device,
        "model": args.model_description if args.full_size else os.path.relpath(args.model, ROOT),
        "right_context": args.right_context,
        "batch_wait_ms": args.batch_wait_ms,
        "precision": args.precision,
        "workers": args.workers,
        "engine_process": args.engine_process or args.engine_processes > 1,
        "engine_processes": args.engine_processes,
        "command": " ".join(sys.argv),
        "solo_tokens": [u.tokens for u in utterances],
        "server_finals_differing_from_engine": differ,
        "valid": all(row["valid"] for row in rows),
        "rows": rows,
    }
    write_result(args.out, result)


def print_row(row: dict, header: bool) -> None:
    if header:
        print(
            "| N | lag p50 / p99 ms | exact sentences' lag | finalize p50 / p99 ms "
            "| exact finals | errors "
            "| tokens/frame | valid | server CPU % (busiest process) | per stream | client CPU % "
            "| GPU % | steps/s | mean batch | mean step ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lag, fin, gpu = row["lag_ms"], row["finalize_ms"], row["gpu"] or {}
    cells = [
        row["clients"],
        f"{lag['p50']} / {lag['p99']}" if lag["n"] else f"none ({row['interims']} interims)",
        f"{row['exact_lag_ms']['p50']} / {row['exact_lag_ms']['p99']}",
        f"{fin['p50']} / {fin['p99']}", f"{row['exact']}/{row['finals']}", row["errors"],
        row["tokens_per_frame"], "yes" if row["valid"] else "NO",
        f"{row['server_cpu_percent']} ({max(row['process_cpu_percent'], default='-')})",
        row["server_cpu_percent_per_stream"], row["client_cpu_percent"],
        gpu.get("utilization_percent_mean", "-"),
        row["steps_per_s"], row["mean_batch"], row["mean_step_ms"],
    ]  # fmt: skip
    print("| " + " | ".join(str(cell) for cell in cells) + " |", flush=True)
    if (lag := row["server_lag"])["n"]:
        print(
            f"server's interim lag: {lag['within_100_ms']:.1%} within 100 ms, mean "
            f"{lag['mean_ms']} ms, p50 <= {lag['p50_at_most_ms']} ms, p99 <= "
            f"{lag['p99_at_most_ms']} ms ({lag['n']} interims)"
        )
    if busy := row["scheduler_seconds_per_s"]:
        print("scheduler seconds per second (all engine processes): " + ", ".join(
            f"{activity} {seconds}" for activity, seconds in busy.items()
        ))  # fmt: skip
    if row["profile"]:
        print_summary(row["profile"])
    if row["unmatched_interims"]:
        print(f"{row['unmatched_interims']} interims had a text the calibration pass never saw")
    if not row["valid"]:
        print(invalid_note(row), flush=True)


if __name__ == "__main__":
    main()
