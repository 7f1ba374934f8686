"""The ASR server's Prometheus metrics (`GET /metrics`), kept by `prometheus_client`.

Each server has its own registry, so servers in one process (the in-process tests) do not share
counts. Updates come from the event loop and the scheduler's thread; prometheus_client's metrics
are thread-safe. A server of several processes (`--workers`) runs prometheus_client's
multiprocess mode: each process writes its values to files, and a scrape of any process sums
them all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
SCHEDULER_ACTIVITIES = ("idle", "reading", "commands", "step", "events")
LAG_PARTS = ("to_scheduler", "in_scheduler", "back")  # of `asr_interim_lag_seconds`


class Labelled:
    """A counter or histogram (`kind`) split by one label, counted with `inc(label=...)` or
    observed with `observe(value, label=...)`. Every expected label value is exported from the
    start at 0, so a dashboard has the series before the first event."""

    def __init__(
        self,
        kind: type[Counter] | type[Histogram],
        name: str,
        documentation: str,
        label: str,
        values: Sequence[str],
        registry: CollectorRegistry,
        **options,
    ):
        self._metric = kind(name, documentation, [label], registry=registry, **options)
        for value in values:
            self._metric.labels(value)

    def inc(self, amount: float = 1.0, label: str = "") -> None:
        self._metric.labels(label).inc(amount)

    def observe(self, value: float, label: str = "") -> None:
        self._metric.labels(label).observe(value)


class ServerMetrics:
    """Every metric the ASR server exports at `GET /metrics`."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.streams_open = Gauge(
            "asr_streams_open",
            "Streams open in the engine.",
            registry=registry,
            multiprocess_mode="livesum",  # of the processes alive
        )
        self.connections = Counter(
            "asr_connections_total", "WebSocket connections accepted.", registry=registry
        )
        self.rejected = Labelled(
            Counter,
            "asr_connections_rejected_total",
            "Connections refused, by reason.",
            "reason",
            ("auth", "loading", "max_streams", "shutting_down"),
            registry,
        )
        self.client_errors = Labelled(
            Counter,
            "asr_client_errors_total",
            "Error messages sent to clients, by cause.",
            "cause",
            ("bad_message", "buffer_full", "idle_timeout", "too_big"),
            registry,
        )
        self.steps = Counter("asr_steps_total", "Batched engine steps run.", registry=registry)
        self.batch_size = Histogram(
            "asr_step_batch_size",
            "Streams per engine step.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.step_seconds = Histogram(
            "asr_step_seconds",
            "Time of one engine step: its launch, and its finish with the wait for the device.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.interim_lag_seconds = Histogram(
            "asr_interim_lag_seconds",
            "Arrival of the audio frame that made a chunk ready to its interim sent, for "
            "interims of streamed chunks: the server's share of what a client sees as lag.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.interim_lag_parts = Labelled(
            Histogram,
            "asr_interim_lag_parts_seconds",
            "asr_interim_lag_seconds in parts: the audio's arrival to its chunk ready in the "
            "scheduler (to_scheduler), to the step's results (in_scheduler: waiting for and "
            "running the step), to the interim sent (back). Where a loaded server's lag is.",
            "part",
            LAG_PARTS,
            registry,
            buckets=LAG_BUCKETS,
        )
        self.finalize_seconds = Histogram(
            "asr_finalize_seconds",
            "Finalize or reset received to final transcript ready to send.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.audio_seconds = Counter(
            "asr_audio_seconds_total",
            "Seconds of client audio accepted into the engine.",
            registry=registry,
        )
        self.transcripts = Labelled(
            Counter,
            "asr_transcripts_total",
            "Transcript messages sent, by kind.",
            "kind",
            ("interim", "flush", "final"),
            registry,
        )

        self.scheduler_seconds = Labelled(
            Counter,
            "asr_scheduler_seconds",
            "Scheduler wall time by activity: waiting for commands (idle), reading those that "
            "queued during a step, applying commands, engine steps, handing events to the "
            "connections. Where a loaded server's time goes.",
            "activity",
            SCHEDULER_ACTIVITIES,
            registry,
        )

    def render(self) -> str:
        """The exposition text for one scrape: of every process, in multiprocess mode."""
        registry = self.registry
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry).decode()
