"""Measured p99 time from speech end to final transcript (TTFS) of our STT services.

Pipecat's turn-stop strategies wait up to `ttfs_p99_latency` for a finalized transcript before
they give up on it, so a value that is too low cuts turns early and one too high only matters
when a final never comes. Like pipecat's own table (`pipecat/services/stt_latency.py`), the
values include the VAD's `stop_secs=0.2` wait. Measured by `python -m benchmarks.services`
(docs/benchmarks.md, "Services"): speech end to the finalized `TranscriptionFrame`, paced espeak
speech, Silero VAD, test model at right context 1, 2-core x86 CPU. A GPU with the full-size model
and another right context differ: measure yours and pass `ttfs_p99_latency=`.
"""

# 2026-11-26, 48 turns each: p99 232.2 ms (p50 213.6) over WebSocket, 228.6 ms (p50 212.6)
# in-process; rounded up to the next 10 ms.
NEMOTRON_TTFS_P99: float = 0.24
NEMOTRON_LOCAL_TTFS_P99: float = 0.23
