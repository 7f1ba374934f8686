"""Several server processes behind one port: `--workers N`.

One process cannot serve a GPU's worth of streams: WebSocket I/O, JSON and per-stream work on the
event loop share the interpreter (and its GIL) with the scheduler's thread, so at a few hundred
streams the process saturates one core while the GPU idles between small steps (docs/server.md
has the profile). `--workers N` starts N spawned processes, each a whole `AsrServer` with its
own engine on the same device, all listening on one port with `SO_REUSEPORT`: the kernel spreads
new connections across them, and each connection lives in one process, so the protocol's
per-connection guarantees (order, finals on shutdown, freed streams) and the exactness contract
(batched == alone) hold unchanged.

What the processes share, through `Seats` (shared memory): each one's state, so `/health` says
ready only once every process is ready; each one's stream count, so `--max-streams` bounds the
whole server. Metrics go through prometheus_client's multiprocess mode, so any process's
`/metrics` answers for all. The parent only supervises: it reserves the port, writes
`--port-file` once every process listens, restarts a process that dies after it was ready (its
connections are lost; the others keep serving), fails when one dies while loading (the model
cannot load; the process logged why), and forwards SIGTERM/SIGINT for a graceful stop.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

from prometheus_client import multiprocess

from nemotron_speech.server.app import (
    AsrServer,
    ServerConfig,
    load_engine,
    max_graph_batch,
    serve_until_signalled,
    write_port,
)
from nemotron_speech.server.engine_process import skip_exit_collection
from nemotron_speech.server.inference import EngineProcess
from nemotron_speech.server.seats import Health, Seats

log = logging.getLogger("nemotron_speech.server")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess switch


def run_workers(config: ServerConfig, workers: int, log_level: str) -> int:
    """Serve `config` with `workers` processes until SIGTERM/SIGINT; the exit status."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        reserved = _reserve_port(config.host, config.port)
    except OSError as exc:
        log.error("server failed: cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    port = reserved.getsockname()[1]
    with reserved, _metrics_dir() as metrics_dir:
        supervisor = _Supervisor(replace(config, port=port, port_file=None), workers, log_level)
        try:
            while not stop.wait(0.1):
                if supervisor.all_listening() and config.port_file is not None:
                    write_port(config.port_file, port)
                if not supervisor.replace_dead(metrics_dir):
                    return 1
            return 0
        finally:
            supervisor.stop(config.shutdown_timeout)


class _Supervisor:
    """Starts the worker processes and replaces those that die."""

    def __init__(self, config: ServerConfig, workers: int, log_level: str):
        self._context = multiprocessing.get_context("spawn")
        self._config = config
        self._log_level = log_level
        self.seats = Seats(workers, self._context)
        self._engines: list[EngineProcess] = []
        if config.engine_process:  # shared: the GPU time-slices several processes' steps
            options = (config.batch_wait_ms / 1000, max_graph_batch(config))
            load = partial(load_engine, config)
            for _ in range(config.engine_processes):
                self._engines.append(EngineProcess(load, options, shared=True))
                self._engines[-1].start()
        self._processes = [self._start(index) for index in range(workers)]
        self._listening = False

    def _start(self, index: int):
        """Start server process `index`, with engine process `index` mod their number."""
        engine = self._engines[index % len(self._engines)] if self._engines else None
        address = engine and (engine.address, engine.authkey)
        process = self._context.Process(
            target=_worker_main,
            args=(self._config, self.seats, index, self._log_level, address),
            name=f"asr-worker-{index}",
        )
        process.start()
        return process

    def all_listening(self) -> bool:
        """True once, when every process first listens."""
        if self._listening or self.seats.health() < Health.LOADING:
            return False
        self._listening = True
        log.info("%d processes listening on port %d", len(self._processes), self._config.port)
        return True

    def replace_dead(self, metrics_dir: str) -> bool:
        """Restart processes that died after they were ready; False if one died before, or the
        shared engine process died (every stream is lost: exit for a process manager to
        restart the whole server)."""
        for index, engine in enumerate(self._engines):
            if not engine.process.is_alive():
                code = engine.process.exitcode
                log.error("the engine process %d exited (code %s); stopping", index, code)
                return False
        for index, process in enumerate(self._processes):
            if process.is_alive():
                continue
            multiprocess.mark_process_dead(process.pid, metrics_dir)
            code = process.exitcode
            if self.seats.state(index) < Health.READY:
                log.error("worker %d exited (code %s) before it was ready; stopping", index, code)
                return False
            log.warning("worker %d exited (code %s); restarting it", index, code)
            self.seats.vacate(index)
            self._processes[index] = self._start(index)
        return True

    def stop(self, timeout: float) -> None:
        """SIGTERM every process (each finalizes its streams), then wait; kill what hangs."""
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(timeout + 10)
            if process.is_alive():
                log.error("%s did not stop; killing it", process.name)
                process.kill()
                process.join()
        for engine in self._engines:  # after the workers: their streams' finals come from it
            engine.join(0)


def _worker_main(
    config: ServerConfig,
    seats: Seats,
    index: int,
    log_level: str,
    engine_address: tuple[str, bytes] | None,
) -> None:
    """One server process (spawned: imports torch and the model itself)."""
    import asyncio
    import sys

    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[worker {index}]: %(message)s",
    )
    if log_level != "DEBUG":
        logging.getLogger("websockets").setLevel(logging.WARNING)
    skip_exit_collection()
    server = AsrServer(config, seats, index, engine_address)
    try:
        asyncio.run(serve_until_signalled(server))
    except Exception as exc:
        log.error("server failed: %s", exc)
        sys.exit(1)


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a `SO_REUSEPORT` socket on `host:port`, held while serving:
    port 0 becomes one free port that every worker then binds too, and no other program takes
    it meanwhile. A socket that does not listen gets no connections. A port in use fails here,
    as it does for one process: it is first bound without `SO_REUSEPORT`, so another server that
    shares ports cannot silently split this one's traffic."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if port:
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


@contextmanager
def _metrics_dir():
    """A fresh directory for prometheus_client's per-process files, set in the environment the
    workers inherit (it must be set before they import prometheus_client)."""
    with tempfile.TemporaryDirectory(prefix="nemotron-asr-metrics-") as folder:
        os.environ[METRICS_DIR_ENV] = folder
        try:
            yield folder
        finally:
            del os.environ[METRICS_DIR_ENV]
