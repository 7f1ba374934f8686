"""Prometheus metrics in the text exposition format, written by hand.

`prometheus_client` is not a dependency of the project, and the server needs only counters,
gauges and fixed-bucket histograms. Values are updated from the event loop and the inference
thread, so every update takes one lock (a few hundred nanoseconds per step or message).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, lock: threading.Lock):
        self.name = name
        self.help = help_text
        self._lock = lock

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A monotonically increasing count, optionally split by one label."""

    kind = "counter"

    def __init__(
        self,
        name: str,
        help_text: str,
        lock: threading.Lock,
        label: str = "",
        values: Sequence[str] = (),
    ):
        super().__init__(name, help_text, lock)
        self.label = label
        self._values: dict[str, float] = dict.fromkeys(values, 0.0) if label else {"": 0.0}

    def inc(self, amount: float = 1.0, label: str = "") -> None:
        with self._lock:
            self._values[label] = self._values.get(label, 0.0) + amount

    def render(self) -> list[str]:
        if not self.label:
            return [*self.header(), f"{self.name} {_number(self._values[''])}"]
        return self.header() + [
            f'{self.name}{{{self.label}="{key}"}} {_number(value)}'
            for key, value in sorted(self._values.items())
        ]


class Gauge(_Metric):
    """A value read when metrics are scraped."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, lock: threading.Lock):
        super().__init__(name, help_text, lock)
        self._value = 0.0

    def set(self, value: float) -> None:
        self._value = value

    def render(self) -> list[str]:
        return [*self.header(), f"{self.name} {_number(self._value)}"]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, lock: threading.Lock, buckets: Sequence[float]):
        super().__init__(name, help_text, lock)
        self.bounds = tuple(buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
            self._counts[index] += 1
            self._sum += value

    def render(self) -> list[str]:
        lines = self.header()
        cumulative = 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else _number(bound)
            lines.append(f'{self.name}_bucket{{le="{le}"}} {cumulative}')
        lines += [f"{self.name}_sum {_number(self._sum)}", f"{self.name}_count {cumulative}"]
        return lines


class ServerMetrics:
    """Every metric the ASR server exports at `GET /metrics`."""

    def __init__(self) -> None:
        lock = threading.Lock()
        self._lock = lock
        self.streams_open = Gauge("asr_streams_open", "Streams open in the engine.", lock)
        self.connections = Counter("asr_connections_total", "WebSocket connections accepted.", lock)
        self.rejected = Counter(
            "asr_connections_rejected_total",
            "Connections refused, by reason.",
            lock,
            label="reason",
            values=("auth", "loading", "max_streams", "shutting_down"),
        )
        self.client_errors = Counter(
            "asr_client_errors_total",
            "Error messages sent to clients, by cause.",
            lock,
            label="cause",
            values=("bad_message", "buffer_full", "idle_timeout", "too_big"),
        )
        self.steps = Counter("asr_steps_total", "Batched engine steps run.", lock)
        self.batch_size = Histogram(
            "asr_step_batch_size", "Streams per engine step.", lock, BATCH_BUCKETS
        )
        self.step_seconds = Histogram(
            "asr_step_seconds", "Wall time of one engine step.", lock, LATENCY_BUCKETS
        )
        self.finalize_seconds = Histogram(
            "asr_finalize_seconds",
            "Hard reset received to final transcript ready to send.",
            lock,
            LATENCY_BUCKETS,
        )
        self.audio_seconds = Counter(
            "asr_audio_seconds_total", "Seconds of client audio accepted into the engine.", lock
        )
        self.transcripts = Counter(
            "asr_transcripts_total",
            "Transcript messages sent, by kind.",
            lock,
            label="kind",
            values=("interim", "soft_final", "final"),
        )

    def render(self) -> str:
        """The exposition text for one scrape."""
        lines: list[str] = []
        with self._lock:
            for metric in vars(self).values():
                if isinstance(metric, _Metric):
                    lines += metric.render()
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
