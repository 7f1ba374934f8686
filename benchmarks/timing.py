"""Timing helpers of the engine benchmark: step times (ours and stock NeMo's) with the tokens
emitted while timing them, finalize latency, and per-phase timers around a step."""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.common import percentile
from benchmarks.realtime import finish, pcm16
from nemotron_speech.asr import AsrEngine


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stats(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(times, 50), 2),
        "p99_ms": round(percentile(times, 99), 2),
        "max_ms": round(max(times), 2),
    }


def time_steps(
    engine: AsrEngine,
    batch: int,
    audio: np.ndarray,
    steps: int,
    warm: int,
    phases: PhaseTimer | None = None,
) -> tuple[list[float], int, int]:
    """Step times with `batch` streams that each get one chunk of new audio per step; also the
    tokens the streams emitted and the samples they were fed."""
    chunk = engine.geometry.chunk * engine.geometry.hop_samples
    span = len(audio) - chunk * (steps + warm + 3)
    offsets = [(n * 7919 * chunk) % span for n in range(batch)]
    streams = [engine.open_stream() for _ in range(batch)]
    times = []
    fed = 0
    for index in range(warm + steps + 1):
        extra = 320 if index == 0 else 0  # the first step takes a longer chunk
        fed += batch * (chunk + extra)
        for n, stream in enumerate(streams):
            engine.feed(stream, pcm16(audio[offsets[n] : offsets[n] + chunk + extra]))
            offsets[n] += chunk + extra
        synchronize(engine.device)
        started = time.perf_counter()
        if phases is not None and index == warm + 1:
            phases.take(1)
        engine.step()
        synchronize(engine.device)
        if index > warm:
            times.append(1000 * (time.perf_counter() - started))
    return times, finish(engine, streams), fed


def time_stock(
    model, batch: int, geometry, audio: np.ndarray, steps: int, warm: int
) -> tuple[list[float], int, int]:
    """NeMo's own loop: batch caches, chunks of log-mel (of `audio`, at the places `time_steps`
    feeds, so that emission compares), hypotheses carried along. The first step takes a first
    chunk (no pre-encode cache, nothing dropped): with a later chunk's shape from fresh caches
    the model emits nothing for the rest of the stream. Also the tokens the hypotheses hold at
    the end and the samples their log-mel covers."""
    device = next(model.parameters()).device
    span = len(audio) // geometry.hop_samples - geometry.chunk * (steps + warm + 3)
    positions = [(n * 7919 * geometry.chunk) % span for n in range(batch)]
    with torch.inference_mode():
        samples = torch.from_numpy(audio).to(device)[None]
        length = torch.tensor([len(audio)], device=device)
        mel, _ = model.preprocessor(input_signal=samples, length=length)
    channel, time_cache, channel_len = model.encoder.get_initial_cache_state(
        batch_size=batch, device=device
    )
    hypotheses = None
    times = []
    for index in range(warm + steps + 1):
        first = index == 0
        before, after = (
            (0, geometry.first_chunk) if first else (geometry.pre_encode_cache, geometry.chunk)
        )
        signal = torch.stack([mel[0, :, p - before : p + after] for p in positions])
        positions = [p + after for p in positions]
        lengths = torch.full((batch,), before + after, device=device)
        synchronize(device)
        started = time.perf_counter()
        with torch.inference_mode():
            outputs = model.conformer_stream_step(
                processed_signal=signal,
                processed_signal_length=lengths,
                cache_last_channel=channel,
                cache_last_time=time_cache,
                cache_last_channel_len=channel_len,
                keep_all_outputs=False,
                previous_hypotheses=hypotheses,
                drop_extra_pre_encoded=0 if first else geometry.drop_extra_pre_encoded,
            )
        synchronize(device)
        _, _, channel, time_cache, channel_len, hypotheses = outputs
        if index > warm:
            times.append(1000 * (time.perf_counter() - started))
    tokens = sum(len(hypothesis.y_sequence) for hypothesis in hypotheses)
    frames = geometry.first_chunk + (warm + steps) * geometry.chunk
    return times, tokens, batch * frames * geometry.hop_samples


def time_finalize(engine: AsrEngine, audio: np.ndarray, repeats: int = 20) -> dict[str, list]:
    """Batch-1 finalize times, context kept (`kept`) and reset (`reset`), taken in turns after
    2-2.4 s of audio: padding, last steps, final text. The length varies by 137 samples per
    repeat, so the end of the audio falls at every place in a chunk (the kept finalize pads to a
    chunk boundary, the reset by one chunk: their costs differ with that place)."""
    times: dict[str, list] = {"kept": [], "reset": []}
    for n in range(repeats):
        for kind in times:
            start = (n % 6) * 16000
            stream = engine.open_stream()
            engine.feed(stream, pcm16(audio[start : start + 32000 + 137 * n]))
            while engine.has_work():
                engine.step()
            synchronize(engine.device)
            started = time.perf_counter()
            engine.finalize(stream, reset=kind == "reset")
            synchronize(engine.device)
            times[kind].append(1000 * (time.perf_counter() - started))
            engine.close(stream)
    return times


class PhaseTimer:
    """Wraps one engine's step phases with synchronised timers, to show where a step goes."""

    PHASES = ("features", "encoder", "decoder", "report")

    METHODS = (("features", "_compute_features"), ("report", "_report_changes"))

    def __init__(self, engine: AsrEngine):
        self.totals = dict.fromkeys(self.PHASES, 0.0)
        self._engine = engine
        self._device = engine.device
        for phase, name in (*self.METHODS, ("encoder", "_encode_eager")):
            setattr(engine, name, self._timed(phase, getattr(engine, name)))
        # a graphed step decodes in the same replay: its decode counts under "encoder"
        graphed = [(component, "encoder") for component in engine._graphed.values()]
        self._components = [*graphed, (engine._decoder, "decoder")]
        for component, phase in self._components:  # callables: time their class's __call__
            component.__class__ = type(
                f"Timed{type(component).__name__}",
                (type(component),),
                {"__call__": self._timed(phase, type(component).__call__)},
            )

    def _timed(self, phase: str, function):
        def timed(*args, **kwargs):
            synchronize(self._device)
            started = time.perf_counter()
            result = function(*args, **kwargs)
            synchronize(self._device)
            self.totals[phase] += 1000 * (time.perf_counter() - started)
            return result

        return timed

    def take(self, steps: int) -> dict[str, float]:
        means = {phase: round(total / steps, 2) for phase, total in self.totals.items()}
        self.totals = dict.fromkeys(self.PHASES, 0.0)
        return means

    def remove(self) -> None:
        """Unwrap the engine: later measurements run without the timers' synchronisations."""
        for _, name in (*self.METHODS, ("encoder", "_encode_eager")):
            delattr(self._engine, name)
        for component, _ in self._components:
            component.__class__ = type(component).__bases__[0]
