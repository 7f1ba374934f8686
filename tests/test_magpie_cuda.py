"""The Magpie engine on a CUDA device: its CUDA-graph steps against the same steps run eagerly
and against NeMo's own path, on the test model and the full-size architecture (random weights).

- graphs == static: a graph replays the static step's kernels on the same buffers, so the codes
  must be identical (the promise; checked exactly);
- static vs NeMo: the same arithmetic, but attention sums over padded lengths and one position
  instead of the whole sequence, so a logit may move by a rounding error. Checked: the decoder's
  logits agree within `LOGIT_TOLERANCE` of their largest magnitude at every frame up to the first
  frame whose codes differ (all frames when the codes are equal, as on the CPU).

CI has no GPU, so the tests are skipped there (the CPU half is tests/test_magpie_steps.py). On a
GPU machine run `python tests/test_magpie_cuda.py`: it fails without CUDA, prints a PASS/FAIL
table, milliseconds per frame for each kind of step and where a graphed frame's host time goes
(exit status 1 on any FAIL).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "tests" / "assets" / "tts"
LONG = "The quick brown fox jumps over the lazy dog, and then it runs far away."
TEXTS = ("Hi.", LONG, "Hello there, how are you today?")  # one sentence each
FRAMES = 64  # full size: every request lasts this long (benchmarks.tts's default)
# of the largest logit: rounding, not a wrong step (that moves logits by their size); fp32 leaves
# room for cuDNN's TF32 convolutions (on by default) choosing differently for 1 and T positions
LOGIT_TOLERANCE = {"fp32": 1e-3, "bf16": 1e-1}

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@dataclass
class Generation:
    """What one batch produced: each request's codes (codebooks, frames) and, for eager steps,
    the decoder's last-position logits of every call (a graph's replays call no Python)."""

    codes: list[torch.Tensor] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)


class _CodesRecorder:
    """`model._codec_helper` for one call: notes the codes `infer_batch` decodes at its end."""

    def __init__(self, helper, codes: list[torch.Tensor]):
        self.helper = helper
        self._codes = codes

    def codes_to_audio(self, codes, codes_len):
        self._codes.extend(c[:, :n].cpu() for c, n in zip(codes, codes_len.tolist(), strict=True))
        return self.helper.codes_to_audio(codes, codes_len)

    def __getattr__(self, name: str):
        return getattr(self.helper, name)


def generate(engine, requests, seed: int, steps: str) -> Generation:
    """One batch of one-sentence `requests` with `steps`, decoded whole."""
    engine.steps = steps
    model = engine.model
    generation = Generation()
    hook = None
    if steps != "graphs":  # a hook would copy to the host inside a capture

        def record(module, inputs, output):
            generation.logits.append(output[:, -1].float().cpu())

        hook = model.final_proj.register_forward_hook(record)
    helper = model._codec_helper
    model._codec_helper = _CodesRecorder(helper, generation.codes)
    try:
        engine.run(requests, lambda index, audio: None, stream=False, seed=seed)
    finally:
        model._codec_helper = helper
        if hook is not None:
            hook.remove()
    return generation


def first_difference(one: Generation, other: Generation) -> int | None:
    """The first frame whose codes differ in any request, or None."""
    frames = []
    for a, b in zip(one.codes, other.codes, strict=True):
        length = min(a.shape[-1], b.shape[-1])
        unequal = (a[:, :length] != b[:, :length]).any(dim=0).nonzero()
        if len(unequal):
            frames.append(int(unequal[0]))
        elif a.shape != b.shape:
            frames.append(length)
    return min(frames) if frames else None


def compare(engine, requests, seed: int) -> str:
    """Check graphs == static exactly and static ~ NeMo (logits); a short verdict."""
    nemo = generate(engine, requests, seed, "nemo")
    static = generate(engine, requests, seed, "static")
    graphs = generate(engine, requests, seed, "graphs")
    assert first_difference(graphs, static) is None, "graphs and static steps gave other codes"
    differ = first_difference(nemo, static)
    calls = len(nemo.logits) if differ is None else differ + 1  # call k samples frame k
    reference = torch.stack(nemo.logits[:calls])
    gap = (torch.stack(static.logits[:calls]) - reference).abs().max().item()
    relative = gap / reference.abs().max().item()
    tolerance = LOGIT_TOLERANCE[engine.precision]
    assert relative <= tolerance, f"static logits differ from NeMo's by {relative:.1e}"
    codes = "codes = NeMo's" if differ is None else f"codes differ from frame {differ}"
    return f"{codes}, logits within {relative:.0e}"


def tiny_engine(precision: str = "fp32"):
    from nemotron_speech.testing.make_magpie import CODEC_FILE, MAGPIE_FILE
    from nemotron_speech.tts.magpie import MagpieEngine

    engine = MagpieEngine.load(ASSETS / MAGPIE_FILE, ASSETS / CODEC_FILE, "cuda")
    engine.precision = precision
    return engine


def full_size():
    """The benchmarks' full-size random-weight model, every request `FRAMES` frames long."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.tts import fix_length
    from nemotron_speech.testing.make_magpie import FULL_CODEC, FULL_MAGPIE, build_models
    from nemotron_speech.tts.magpie import MagpieEngine

    with tempfile.TemporaryDirectory() as work:
        _, model = build_models(Path(work), FULL_CODEC, FULL_MAGPIE, speakers=5)
    model.use_kv_cache_for_inference = True
    engine = MagpieEngine(model.to("cuda"))
    fix_length(engine, FRAMES)
    return engine


def check_test_model(precision: str) -> str:
    engine = tiny_engine(precision)
    verdicts = {compare(engine, [engine.check(t)], seed) for t in TEXTS for seed in (0, 1)}
    batch = [engine.check(text, voice) for text, voice in zip(TEXTS, "010", strict=True)]
    verdicts.add(compare(engine, batch, 2))
    return "; ".join(sorted(verdicts))


def check_streaming() -> str:
    """Graph steps streamed: the chunks join into the whole decode of the same steps."""
    import numpy as np

    engine = tiny_engine()
    assert engine.steps == "graphs", "an engine on CUDA defaults to its graph steps"
    whole = engine.synthesize(LONG, seed=0)
    chunks: list[np.ndarray] = []
    engine.stream(LONG, chunks.append, seed=0)
    joined = np.concatenate(chunks)
    assert joined.shape == whole.shape and np.abs(joined - whole).max() <= 1e-5
    return f"{len(chunks)} chunks = whole decode"


def check_full_size(engine, batch: int, precision: str = "fp32") -> str:
    voices = engine.voices
    requests = [engine.check(LONG, voices[i % len(voices)]) for i in range(batch)]
    engine.precision = precision
    try:
        return compare(engine, requests, 0)
    finally:
        engine.precision = "fp32"


@needs_cuda
@pytest.mark.parametrize("precision", ("fp32", "bf16"))
def test_graphs_on_the_test_model(precision):
    check_test_model(precision)


@needs_cuda
def test_graph_steps_stream_exactly():
    check_streaming()


@needs_cuda
@pytest.mark.parametrize("precision", ("fp32", "bf16"))
def test_graphs_on_the_full_size_model(precision):
    engine = full_size()
    for batch in (1, 4):
        check_full_size(engine, batch, precision)


def per_frame_ms(engine, batch: int, steps: str) -> str:
    """ms per frame for `batch` requests of LONG: a warm call (the first call's in brackets:
    captures, allocations), or why it failed."""
    engine.steps = steps
    requests = [engine.check(LONG, engine.voices[i % len(engine.voices)]) for i in range(batch)]
    walls = []
    try:
        for _ in range(2):
            torch.cuda.synchronize()
            started = time.perf_counter()
            engine.run(requests, lambda index, audio: None, stream=False, seed=0)
            walls.append(1000 * (time.perf_counter() - started) / FRAMES)
    except Exception as error:  # a row per configuration, whatever went wrong
        return f"{type(error).__name__}"
    return f"{walls[1]:6.2f} ({walls[0]:5.1f})"


def print_timings(engine) -> None:
    from nemotron_speech.tts.magpie.engine import STEPS

    print(f"\nfull size, {FRAMES} frames a request, whole decode: ms per frame (first call)")
    print(f"{'precision':>9} {'B':>3} " + " ".join(f"{steps:>14}" for steps in STEPS))
    for precision, batch in (("fp32", 1), ("fp32", 16), ("bf16", 1)):
        engine.precision = precision
        cells = " ".join(f"{per_frame_ms(engine, batch, steps):>14}" for steps in STEPS)
        print(f"{precision:>9} {batch:>3} {cells}", flush=True)
    engine.precision = "fp32"


def print_profile(engine) -> None:
    """Where a graphed B=1 call's host time goes (NeMo's loop around the replays)."""
    from torch.profiler import ProfilerActivity, profile

    engine.steps = "graphs"
    request = [engine.check(LONG)]
    engine.run(request, lambda index, audio: None, stream=False, seed=0)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        engine.run(request, lambda index, audio: None, stream=False, seed=0)
    print(f"\ngraphs, B=1, one call of {FRAMES} frames: top host ops")
    table = profiler.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=48
    )
    print(table)


def main() -> int:
    """Every CUDA check once, as a PASS/FAIL table, then timings; 1 if any failed or no GPU."""
    if not torch.cuda.is_available():
        print("FAIL: no CUDA device (this script is the GPU half; CI's pytest skips it)")
        return 1
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    started = time.perf_counter()
    engine = full_size()
    print(f"full-size model built in {time.perf_counter() - started:.0f} s")
    checks = [
        ("test model fp32: graphs, static, nemo", check_test_model, ("fp32",)),
        ("test model bf16: graphs, static, nemo", check_test_model, ("bf16",)),
        ("test model: graphs streamed = whole", check_streaming, ()),
        ("full size fp32 B=1", check_full_size, (engine, 1)),
        ("full size fp32 B=4", check_full_size, (engine, 4)),
        ("full size bf16 B=1", check_full_size, (engine, 1, "bf16")),
    ]
    failed = 0
    for name, check, args in checks:
        started = time.perf_counter()
        try:
            verdict = f"PASS {check(*args)}"
        except Exception as error:  # one table row per check, whatever went wrong
            verdict = f"FAIL {type(error).__name__}: {str(error)[:300]}"
            failed += 1
        print(f"{name:<40} {time.perf_counter() - started:5.1f} s  {verdict}", flush=True)
    print(f"{len(checks) - failed}/{len(checks)} PASS")
    print_timings(engine)
    try:
        print_profile(engine)
    except Exception as error:  # the table above is what matters
        print(f"no profile: {type(error).__name__}: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
