"""One row of `server_load`'s table per N: run the N clients against the server and read what
they and the server measured (lags, finals, the server's CPU per process, /metrics, the GPU,
the optional py-spy profile), then print the row. The fields are described in server_load.py.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

from benchmarks.common import GpuSampler, percentile, process_tree_cpu_seconds
from benchmarks.load_clients import Utterance, client_group
from benchmarks.random_weights import emission, invalid_note
from benchmarks.server_profile import ServerProfiler, print_summary
from nemotron_speech.protocol import SAMPLE_RATE, SAMPLE_WIDTH
from nemotron_speech.server.launcher import read_metrics
from nemotron_speech.server.metrics import LAG_BUCKETS, LAG_PARTS, SCHEDULER_ACTIVITIES

PARTS = "asr_interim_lag_parts_seconds"


def run_level(args, url: str, n: int, pid: int | None, utterances: list[Utterance]) -> dict:
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
    fed = after["asr_audio_seconds_total"] - before["asr_audio_seconds_total"]
    sent = sum(s.sent_bytes for s in stats) / (SAMPLE_RATE * SAMPLE_WIDTH)
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
        "untimed_interims": sum(s.untimed for s in stats),
        # every byte sent reached the engine (`asr_audio_seconds_total`): none dropped
        "audio_seconds": {"sent": round(sent, 3), "fed": round(fed, 3)},
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


def profile_row(args, url: str, pid: int | None, n: int) -> ServerProfiler | None:
    """With --profile-seconds, py-spy on the server's busiest process once all N are in."""
    if not args.profile_seconds or pid is None:
        return None
    path = args.out.with_name(f"{args.out.stem}-n{n}-profile.txt")
    return ServerProfiler(url, pid, n, args.profile_seconds, args.seconds, path)


def server_lag(before: dict, after: dict) -> dict:
    """The server's own interim lag (`asr_interim_lag_seconds`: the audio frame that made a
    chunk ready arrived -> its interim sent): no text matching, so random weights cannot skew
    it. From the histogram's buckets: the share within 100 ms and bounds on p50 and p99; and the
    mean of each of its parts (`asr_interim_lag_parts_seconds`), which add up to its mean."""

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
        "parts_mean_ms": {
            part: round(1000 * delta(f'{PARTS}_sum{{part="{part}"}}') / count, 1)
            for part in LAG_PARTS
        },
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
            f"{lag['p99_at_most_ms']} ms ({lag['n']} interims); mean in parts: "
            + ", ".join(f"{part} {ms} ms" for part, ms in lag["parts_mean_ms"].items())
        )
    if busy := row["scheduler_seconds_per_s"]:
        print("scheduler seconds per second (all engine processes): " + ", ".join(
            f"{activity} {seconds}" for activity, seconds in busy.items()
        ))  # fmt: skip
    if row["profile"]:
        print_summary(row["profile"])
    if (audio := row["audio_seconds"])["fed"] != audio["sent"]:
        print(f"AUDIO LOST: {audio['sent']} s sent, {audio['fed']} s reached the engine")
    if row["untimed_interims"]:
        print(f"{row['untimed_interims']} interims came from chunks run after `end` (not timed)")
    if not row["valid"]:
        print(invalid_note(row), flush=True)
