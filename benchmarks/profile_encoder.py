"""Where one batched streaming encoder step spends its GPU time, by module and by kernel.

Runs the full-size architecture (random weights) on a CUDA device at one right context, with the
shapes of a later streaming step (pre-encode cache + one chunk, full attention caches), and
prints, for NeMo's modules and for `fast_layers`: the step time replayed from a CUDA graph and
the GPU time per encoder sub-module summed over layers (CUDA events around each module); then the
top kernels of the `fast_layers` step from torch.profiler. Usage (device tool, after
`source benchmarks/device_setup.sh`):

    python -m benchmarks.profile_encoder --batch 1024 --precision bf16
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from benchmarks.common import percentile
from nemotron_speech.asr.engine import PRECISIONS
from nemotron_speech.asr.fast_layers import use_fast_layers
from nemotron_speech.asr.model import configure_decoding, select_right_context


def step_inputs(encoder, geometry, batch: int, dtype, device):
    """A later step's inputs for `batch` streams whose caches are full."""
    features = encoder._feat_in
    frames = geometry.pre_encode_cache + geometry.chunk
    signal = torch.randn(batch, features, frames, dtype=dtype, device=device)
    lengths = torch.full((batch,), frames, dtype=torch.long, device=device)
    channel, time_cache, channel_len = encoder.get_initial_cache_state(
        batch_size=batch, dtype=dtype, device=device
    )
    channel.normal_()
    time_cache.normal_()
    channel_len.fill_(channel.shape[2])
    return signal, lengths, channel, time_cache, channel_len


def encoder_step(encoder, geometry, inputs):
    signal, lengths, channel, time_cache, channel_len = inputs
    return encoder.cache_aware_stream_step(
        processed_signal=signal,
        processed_signal_length=lengths,
        cache_last_channel=channel,
        cache_last_time=time_cache,
        cache_last_channel_len=channel_len,
        keep_all_outputs=False,
        drop_extra_pre_encoded=geometry.drop_extra_pre_encoded,
    )


def graph_ms(function, repeats: int = 20) -> float:
    """Median replay time of `function` captured as one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            function()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return percentile(times, 50)


def module_times(encoder, function, repeats: int = 5) -> dict[str, float]:
    """GPU ms per step of each kind of sub-module (pre_encode, and each layer's parts summed)."""
    events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
    handles = []
    watched = [(encoder.pre_encode, "pre_encode")]
    for layer in encoder.layers:
        watched += [(module, f"layer.{part}") for part, module in layer.named_children()]
    watched += [(layer, "layer (whole)") for layer in encoder.layers]
    for layer in encoder.layers:
        attention = layer.self_attn.named_children()
        watched += [(module, f"layer.self_attn.{part}") for part, module in attention]
    for module, name in watched:
        opened: list[torch.cuda.Event] = []

        def before(_module, _inputs, opened=opened):
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            opened.append(event)

        def after(_module, _inputs, _output, opened=opened, name=name):
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            events.append((name, opened.pop(), event))

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    function()
    events.clear()
    for _ in range(repeats):
        function()
    torch.cuda.synchronize()
    for handle in handles:
        handle.remove()
    totals: dict[str, float] = defaultdict(float)
    for name, start, end in events:
        totals[name] += start.elapsed_time(end) / repeats
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def top_kernels(function, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    function()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            function()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_device_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16")
    parser.add_argument("--right-context", type=int, default=1)
    parser.add_argument("--kernels", type=int, default=30, help="rows of the kernel table")
    args = parser.parse_args()
    from nemotron_speech.testing.make_model import build_full_size

    device = torch.device("cuda")
    with tempfile.TemporaryDirectory() as work:
        model = build_full_size(Path(work)).eval()
    configure_decoding(model)
    geometry = select_right_context(model, args.right_context)
    encoder = model.encoder.to(device, PRECISIONS[args.precision])
    inputs = step_inputs(encoder, geometry, args.batch, PRECISIONS[args.precision], device)
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} B={args.batch}", flush=True)

    def run():
        return encoder_step(encoder, geometry, inputs)

    with torch.inference_mode():
        for fast in (False, True):
            use_fast_layers(encoder, fast)
            label = "fast_layers" if fast else "NeMo modules"
            print(f"{label}: graph replay {graph_ms(run):.2f} ms; eager, per module:", flush=True)
            for name, ms in module_times(encoder, run).items():
                print(f"  {name:28s} {ms:8.2f} ms")
        print(top_kernels(run, args.kernels), flush=True)


if __name__ == "__main__":
    main()
