"""What the processes of one server share (see `workers.py`): each one's state and stream count.

A single-process server has one seat, so the same code admits streams and answers `/health`
whether there is one process or several."""

from __future__ import annotations

import enum
import multiprocessing
from typing import Any


class Health(enum.IntEnum):
    """A server process's state, ordered so the whole server's is the least advanced one's
    (STOPPING is reported as soon as one process stops)."""

    STARTING = 0  # not listening yet
    LOADING = 1  # listening; the model is loading
    READY = 2
    STOPPING = 3


class Seats:
    """The state and stream count of each of `processes` server processes, in shared memory
    (a single-process server has one seat)."""

    def __init__(self, processes: int, context: Any = None):
        context = context or multiprocessing.get_context("spawn")
        self._states = context.Array("b", processes)
        self._streams = context.Array("i", processes)
        self._replacing = context.Array("b", processes)  # started again after it died

    @property
    def processes(self) -> int:
        return len(self._states)

    def set_state(self, index: int, state: Health) -> None:
        self._states[index] = state
        if state is Health.READY:
            self._replacing[index] = 0

    def state(self, index: int) -> Health:
        return Health(self._states[index])

    def health(self) -> Health:
        """The whole server's: ready once every process is, and still ready while one that died
        is replaced (the others serve; a process that does not listen gets no connections)."""
        states = [Health(s) for s in self._states]
        if Health.STOPPING in states:
            return Health.STOPPING
        serving = [s for s, replacing in zip(states, self._replacing, strict=True) if not replacing]
        return min(serving or states)

    def streams(self) -> int:
        return sum(self._streams)

    def admit(self, index: int, max_streams: int) -> bool:
        """Take a stream for process `index` if the whole server is below `max_streams`."""
        with self._streams.get_lock():
            if sum(self._streams) >= max_streams:
                return False
            self._streams[index] += 1
            return True

    def release(self, index: int) -> None:
        with self._streams.get_lock():
            self._streams[index] -= 1

    def vacate(self, index: int) -> None:
        """Forget a dead process's streams and state (before its replacement starts)."""
        with self._streams.get_lock():
            self._streams[index] = 0
        self._states[index] = Health.STARTING
        self._replacing[index] = 1
