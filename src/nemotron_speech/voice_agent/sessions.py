"""Run a pipecat runner session so that Ctrl-C (or SIGTERM) to the server ends it at once.

pipecat's runner serves WebRTC and telephony sessions from uvicorn and owns the signals there
(`handle_sigint` is False). On SIGINT or SIGTERM uvicorn waits for every running session to end
by itself, and a browser session lasts until its peer leaves, or until aiortc's timeouts when
the browser is gone without a word (20-60 s): the bot seemed to hang. A second Ctrl-C made
uvicorn give up and asyncio cancel every task at once; a pipeline's cancel then waits for its
processors' tasks, cancelled too, and the process never exited. So the first signal cancels
the live sessions the way a client's disconnect does, and uvicorn then shuts down as usual.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from pipecat.pipeline.worker import PipelineWorker
from pipecat.workers.runner import WorkerRunner

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # the ones uvicorn shuts down on

_live: set[PipelineWorker] = set()
_cancels: set[asyncio.Task] = set()  # held until done: the loop keeps only weak references


async def run_session(worker: PipelineWorker, *, handle_sigint: bool) -> None:
    """Run `worker` until it ends; `handle_sigint` as the runner passes it
    (`RunnerArguments.handle_sigint`).

    With True (no server: Daily or Vonage joined directly) pipecat's `WorkerRunner` handles
    SIGINT itself. With False the server's handlers are kept, and one that first cancels the
    live sessions is put in front of them.
    """
    if not handle_sigint:
        _cancel_sessions_on_exit_signals(asyncio.get_running_loop())
    runner = WorkerRunner(handle_sigint=handle_sigint)
    await runner.add_workers(worker)
    _live.add(worker)
    try:
        await runner.run()
    finally:
        _live.discard(worker)


class _CancelSessions:
    """A signal handler: cancel the live sessions, then run the handler it replaced."""

    def __init__(self, loop: asyncio.AbstractEventLoop, previous: Callable[..., Any]):
        self.loop = loop
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        # a Python signal handler runs between two bytecodes of the loop's thread: only schedule
        self.loop.call_soon_threadsafe(_cancel_live)
        self.previous(signum, frame)


def _cancel_live() -> None:
    for worker in _live:
        task = asyncio.ensure_future(worker.cancel(reason="server shutting down"))
        _cancels.add(task)
        task.add_done_callback(_cancels.discard)


def _cancel_sessions_on_exit_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Put `_CancelSessions` in front of the server's SIGINT and SIGTERM handlers, once.

    Only a Python handler is wrapped (uvicorn's): a default or ignored signal stays as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set signal handlers
    for sig in EXIT_SIGNALS:
        previous = signal.getsignal(sig)
        if callable(previous) and not isinstance(previous, _CancelSessions):
            signal.signal(sig, _CancelSessions(loop, previous))
