"""Which batch sizes get CUDA graphs; and, on a CUDA device, the production configuration:

- the CUDA-graph engine (first and later steps, each with its greedy decode in one graph, over
  fast_layers) gives the eager fp32 engine's tokens and the sentences at every right context;
- at the full-size architecture, a step's first chunks replayed on their own CUDA stream beside
  the later chunks give exactly what they give replayed in line; and steps launched while the
  one before still runs (as the server steps) give what steps run one at a time give, with no
  launch waiting for the device;
- streams joining and leaving a graph engine mid-run (`batching_schedule.py`, shared with the CPU
  test `test_batching_exact.py`), in fp32, bf16 and fp16, at batch sizes that are padded up to
  their bucket (3 in 4, 5 and 6 in 8), report exactly what each reports stepped alone in the same
  precision.

CI has no GPU, so the CUDA tests are skipped there. On a GPU machine run
`python tests/test_cuda_graphs.py [WORD ...]`: it fails without CUDA, runs every check (or those
whose name holds a WORD) and prints a PASS/FAIL table (exit status 1 on any FAIL)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
from batching_schedule import compare

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "assets" / "asr" / "tiny-asr.nemo"
WAVS = sorted((ROOT / "tests" / "assets" / "asr" / "speech").glob("*.wav"))
SCHEDULE_RIGHT_CONTEXTS = (1, 0, 6)
SCHEDULE_PRECISIONS = ("bf16", "fp32", "fp16")
MAX_GRAPH_BATCH = 8  # buckets 1, 2, 4, 8

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_graph_buckets_are_powers_of_two_up_to_the_largest_batch():
    from nemotron_speech.asr.graphs import graph_buckets

    assert graph_buckets(1) == [1]
    assert graph_buckets(64) == [1, 2, 4, 8, 16, 32, 64]
    assert graph_buckets(100) == [1, 2, 4, 8, 16, 32, 64, 100]


@needs_cuda
@pytest.mark.parametrize("right_context", (0, 1, 6, 13), ids=lambda r: f"R{r}")
def test_graphs_equal_eager_on_cuda(right_context):
    from nemotron_speech.asr import AsrEngine
    from nemotron_speech.asr.audio import load_audio
    from nemotron_speech.testing.sentences import SENTENCES

    options = {"right_context": right_context, "device": "cuda", "max_graph_batch": 8}
    eager = AsrEngine.load(MODEL, cuda_graphs=False, **options)
    graphs = AsrEngine.load(MODEL, cuda_graphs=True, **options)
    graphs.warmup()
    for wav, sentence in zip(WAVS, SENTENCES, strict=True):
        samples = load_audio(wav)
        reference = eager.transcribe(samples)
        final = graphs.transcribe(samples)
        assert final.token_ids == reference.token_ids, wav.name
        assert final.text == sentence, wav.name


def schedule_on_graphs(right_context: int, precision: str, pipelined: bool = False):
    """The joining-and-leaving schedule on a graph engine, checked; returns the comparison.
    `pipelined`: each step launched before the one before is finished, as the server steps."""
    from nemotron_speech.asr import AsrEngine
    from nemotron_speech.asr.audio import load_audio
    from nemotron_speech.testing.sentences import SENTENCES

    engine = AsrEngine.load(
        MODEL,
        right_context=right_context,
        device="cuda",
        precision=precision,
        cuda_graphs=True,
        max_graph_batch=MAX_GRAPH_BATCH,
    )
    engine.warmup()  # captures every bucket: no step below runs eagerly
    comparison = compare(engine, [load_audio(wav) for wav in WAVS], pipelined=pipelined)
    comparison.check(SENTENCES if precision == "fp32" else None)
    largest = max(size for calls in comparison.batched.calls for size in calls)
    assert largest <= MAX_GRAPH_BATCH  # every call replayed a graph (larger ones run eagerly)
    return comparison


def _full_size_engine():
    """The full-size architecture (random weights: its products are large enough for cuBLAS to
    use a workspace, which the tiny model's may not), bf16 graphs up to batch 64, warmed up;
    and the sentences' clips."""
    import tempfile

    from nemotron_speech.asr import AsrEngine
    from nemotron_speech.asr.audio import load_audio
    from nemotron_speech.asr.model import configure_decoding
    from nemotron_speech.testing.make_model import build_full_size

    with tempfile.TemporaryDirectory() as work:
        model = build_full_size(Path(work)).eval()
    configure_decoding(model)
    engine = AsrEngine(model.cuda(), right_context=1, precision="bf16", max_graph_batch=64)
    engine.warmup()
    return engine, [load_audio(wav) for wav in WAVS]


def _many_plans():
    from batching_schedule import Plan

    return [Plan(n % len(WAVS), start=n // 3) for n in range(48)]  # 3 new streams a tick


def first_chunks_beside_equal_in_line() -> None:
    """Under many streams joining while others run, at the full-size architecture: with the
    first-chunk graph on its own CUDA stream, beside the later chunks' graph, every stream
    reports exactly what it reports with that graph run in line on the caller's stream. Same
    graphs, same kernels: only running side by side differs (two graphs sharing a cuBLAS
    workspace corrupted each other this way, where the tiny model's checks passed)."""
    from batching_schedule import run

    engine, clips = _full_size_engine()
    plans = _many_plans()
    outcomes = [run(engine, clips, plans)]  # every stream closes: the engine is as before
    engine._graphed[True]._stream = None  # the same graphs, the first-step one replayed in line
    outcomes.append(run(engine, clips, plans))
    assert any(len(calls) > 1 for calls in outcomes[0].calls), "no step ran two model calls"
    assert outcomes[0].reports == outcomes[1].reports


def launched_before_finished_equal_stepped() -> None:
    """As the server steps, at the full-size architecture: each step is launched while the one
    before still runs on the device, and every stream reports the same interims and finals as
    stepped one step at a time; and no launch waits for the device (torch's sync debug mode
    sees no synchronising call in one: a hidden wait would serialise host and device again)."""
    import warnings

    from batching_schedule import run, without_ticks

    engine, clips = _full_size_engine()
    plans = _many_plans()
    stepped = run(engine, clips, plans)
    launch, waits = engine.launch, []

    def watched_launch(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                return launch(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            waits.extend(str(warning.message) for warning in caught)

    engine.launch = watched_launch
    pipelined = run(engine, clips, plans, pipelined=True)
    assert without_ticks(pipelined) == without_ticks(stepped)
    assert not waits, f"{len(waits)} synchronising calls in launches, e.g. {waits[0]}"


@needs_cuda
def test_first_chunks_beside_equal_in_line():
    first_chunks_beside_equal_in_line()


@needs_cuda
def test_launched_before_finished_equal_stepped():
    launched_before_finished_equal_stepped()


@needs_cuda
@pytest.mark.parametrize("precision", SCHEDULE_PRECISIONS)
@pytest.mark.parametrize("right_context", SCHEDULE_RIGHT_CONTEXTS, ids=lambda r: f"R{r}")
def test_joining_and_leaving_streams_on_graphs_equal_alone(right_context, precision):
    schedule_on_graphs(right_context, precision)


@needs_cuda
def test_pipelined_schedule_on_graphs_equal_alone():
    schedule_on_graphs(1, "bf16", pipelined=True)


def _padded(sizes: set[int]) -> str:
    """`3>4 5>8`: batch sizes and the buckets they are padded to."""
    from nemotron_speech.asr.graphs import graph_buckets

    buckets = graph_buckets(MAX_GRAPH_BATCH)
    return " ".join(f"{s}>{next(b for b in buckets if b >= s)}" for s in sorted(sizes))


def main(only: list[str]) -> int:
    """Every CUDA check once (or those whose name holds a word of `only`), as a PASS/FAIL
    table; 1 if any failed or there is no GPU."""
    if not torch.cuda.is_available():
        print("FAIL: no CUDA device (this script is the GPU half; CI's pytest skips it)")
        return 1
    checks = [
        (f"graphs == eager fp32, R={r}, 16 clips", test_graphs_equal_eager_on_cuda, (r,))
        for r in (0, 1, 6, 13)
    ] + [
        (f"schedule batched == alone, R={r} {p}", schedule_on_graphs, (r, p))
        for r in SCHEDULE_RIGHT_CONTEXTS
        for p in SCHEDULE_PRECISIONS
    ]
    checks += [
        ("schedule pipelined == alone, R=1 bf16", schedule_on_graphs, (1, "bf16", True)),
        ("first chunks beside == in line, full size", first_chunks_beside_equal_in_line, ()),
        ("launched before finished == stepped, full", launched_before_finished_equal_stepped, ()),
    ]
    checks = [check for check in checks if not only or any(w in check[0] for w in only)]
    if not checks:
        print(f"FAIL: no check's name holds any of {only}")
        return 1
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    failed = 0
    for name, check, args in checks:
        started = time.perf_counter()
        try:
            result = check(*args)
            verdict = "PASS"
            if result is not None:
                streams = len(result.alone)
                verdict += (
                    f" {streams}/{streams} streams, batches {_padded(result.later_batches())}"
                )
        except Exception as error:  # one table row per check, whatever went wrong
            verdict = f"FAIL {type(error).__name__}: {str(error)[:300]}"
            failed += 1
        print(f"{name:<42} {time.perf_counter() - started:5.1f} s  {verdict}")
    print(f"{len(checks) - failed}/{len(checks)} PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
