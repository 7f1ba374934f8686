"""The ASR server: WebSocket streams plus `/health` and `/metrics` on one port.

Built on the `websockets` library (see docs/server.md for why): its `process_request` hook
answers plain HTTP GETs and checks the bearer token before the WebSocket handshake, so a client
with a wrong token is refused with 401 before it can send any audio.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from nemotron_speech.endpoints import ASR_PORT
from nemotron_speech.protocol import CloseCode, Ready
from nemotron_speech.server.inference import InferenceProcess, InferenceThread
from nemotron_speech.server.metrics import ServerMetrics
from nemotron_speech.server.seats import Health, Seats
from nemotron_speech.server.session import Limits, Session

log = logging.getLogger(__name__)

SEED_RIGHT_CONTEXT = 1  # the seed's recommendation (160 ms chunks): the default where supported
# The engine's own bound, the last line of defence behind the sessions' backpressure: a stream's
# audio can pass the sessions' bound by its last unfinished chunk (at most 1.12 s, at R=13).
ENGINE_BOUND_MARGIN_S = 2.0


@dataclass(frozen=True)
class ServerConfig:
    """Everything `python -m nemotron_speech.server` can set."""

    model: Path
    host: str = "127.0.0.1"
    port: int = ASR_PORT
    right_context: int | None = None
    device: str = "cpu"
    precision: str = "fp32"  # of the encoder: fp32, bf16 or fp16
    cuda_graphs: bool = True  # CUDA-graph encoder steps when the device is a GPU
    max_streams: int = 64
    auth_token: str | None = None
    idle_timeout: float = 60.0
    max_message_bytes: int = 256 * 1024  # 8 s of audio in one frame
    max_buffered_seconds: float = 30.0  # unprocessed audio per stream: then reading pauses
    backpressure_timeout: float = 20.0  # a stream paused this long is closed (1008)
    batch_wait_ms: float = 0.0
    engine_process: bool = False  # the scheduler in a process of its own, not on a thread
    engine_processes: int = 1  # how many a --workers server shares out among its processes
    shutdown_timeout: float = 5.0
    port_file: Path | None = None  # where to write the bound port once listening

    def __post_init__(self) -> None:
        if self.engine_processes < 1 or (self.engine_processes > 1 and not self.engine_process):
            raise ValueError(
                f"engine_processes={self.engine_processes} needs engine_process=True and >= 1"
            )

    @property
    def limits(self) -> Limits:
        return Limits(self.idle_timeout, self.max_buffered_seconds, self.backpressure_timeout)


class AsrServer:
    """Loads the engine (on the scheduler's thread or process) while already answering `/health`.

    One of `seats.processes` processes serving one port (`--workers`, see `workers.py`) when
    given `seats` and this process's `index` in them; alone otherwise. With `engine_address` (an
    engine process's listener: address, auth key) it uses that shared engine process."""

    def __init__(
        self,
        config: ServerConfig,
        seats: Seats | None = None,
        index: int = 0,
        engine_address: tuple[str, bytes] | None = None,
    ):
        self.config = config
        self.metrics = ServerMetrics()
        self.seats = seats or Seats(1)
        self._index = index
        self._engine_address = engine_address
        self.port: int | None = None  # the bound port, once listening (--port 0 picks one)
        self.sessions: set[Session] = set()
        self._ready_message: Ready | None = None
        self._inference: InferenceThread | InferenceProcess | None = None
        self._engine_lost = False
        self._server: Server | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Serve until `stop()` is called; raises if the model cannot be loaded."""
        loop = asyncio.get_running_loop()
        options = {
            "batch_wait": self.config.batch_wait_ms / 1000,
            "max_batch": max_graph_batch(self.config),
        }
        load = partial(load_engine, self.config)
        if self.config.engine_process:
            self._inference = InferenceProcess(
                load,
                self.metrics,
                loop,
                on_failure=self._lost_engine,
                engine_address=self._engine_address,
                **options,
            )
        else:
            self._inference = InferenceThread(load, self.metrics, loop, **options)
        config = self.config
        async with serve(
            self._handle,
            config.host,
            config.port,
            process_request=self._process_request,
            max_size=config.max_message_bytes,
            compression=None,  # deflating PCM costs event-loop CPU per frame and saves little
            server_header="nemotron-speech",
            reuse_port=self.seats.processes > 1,
        ) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            log.info("listening on ws://%s:%d (loading the model)", config.host, self.port)
            self.health = Health.LOADING
            if config.port_file is not None:
                write_port(config.port_file, self.port)
            self._inference.start()
            engine = await self._inference.loaded  # an EngineInfo
            self._ready_message = Ready(
                chunk_ms=engine.chunk_ms, right_context=engine.right_context
            )
            self.health = Health.READY
            log.info(
                "ready: model=%s device=%s precision=%s cuda_graphs=%s right_context=%d "
                "(chunk %.0f ms; supported %s) max_streams=%d engine_process=%s memory=%s",
                config.model,
                engine.device,
                config.precision,
                config.cuda_graphs and config.device.startswith("cuda"),
                engine.right_context,
                engine.chunk_ms,
                list(engine.supported_right_contexts),
                config.max_streams,
                config.engine_process,
                engine.memory,
            )
            await self._stopping.wait()
            await self._shutdown()
        if self._engine_lost:
            raise RuntimeError("the engine process exited; its streams were closed with 1011")

    @property
    def health(self) -> Health:
        """This process's state (`/health` reports the whole server's)."""
        return self.seats.state(self._index)

    @health.setter
    def health(self, state: Health) -> None:
        self.seats.set_state(self._index, state)

    def _lost_engine(self) -> None:
        """The engine process died: its streams are closed (1011); stop, to exit non-zero."""
        self._engine_lost = True
        self.stop()

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler on the loop)."""
        self._stopping.set()

    async def _shutdown(self) -> None:
        self.health = Health.STOPPING
        log.info("shutting down: finalizing %d open streams", len(self.sessions))
        self._server.close(close_connections=False)  # stop accepting; keep the open ones
        await asyncio.gather(
            *(s.shutdown(self.config.shutdown_timeout) for s in list(self.sessions)),
            return_exceptions=True,
        )
        await self._server.wait_closed()
        self._inference.stop()
        log.info("stopped")

    async def _handle(self, websocket: ServerConnection) -> None:
        refusal = self._refusal()
        if refusal is not None:
            reason, text = refusal
            self.metrics.rejected.inc(label=reason)
            await websocket.close(CloseCode.TRY_AGAIN_LATER, text)
            return
        self.metrics.connections.inc()
        session = Session(
            websocket, self._inference, self._ready_message, self.metrics, self.config.limits
        )
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self.seats.release(self._index)

    def _refusal(self) -> tuple[str, str] | None:
        """Why a new connection cannot have a stream now: (metric label, close reason); None
        when it has taken a seat (released when the connection ends)."""
        if self.health is Health.LOADING:
            return "loading", "server is loading the model; retry when /health says ready"
        if self.health is Health.STOPPING:
            return "shutting_down", "server is shutting down"
        if not self.seats.admit(self._index, self.config.max_streams):
            return "max_streams", f"server is at its limit of {self.config.max_streams} streams"
        return None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/health":
            health = self.seats.health()
            status = HTTPStatus.OK if health is Health.READY else HTTPStatus.SERVICE_UNAVAILABLE
            body = {"status": health.name.lower(), "streams": self.seats.streams()}
            return _with_type(
                connection.respond(status, json.dumps(body) + "\n"), "application/json"
            )
        if path == "/metrics":
            return _with_type(
                connection.respond(HTTPStatus.OK, self.metrics.render()),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        token = self.config.auth_token
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                self.metrics.rejected.inc(label="auth")
                what = "wrong" if given else "missing"
                return connection.respond(
                    HTTPStatus.UNAUTHORIZED,
                    f"{what} token: send the header 'Authorization: Bearer <token>'\n",
                )
        return None


def load_engine(config: ServerConfig):
    """The server's engine, loaded and warmed up; runs where the scheduler runs, the only place
    the engine is created. Without a right context: the seed's where the model has it."""
    from nemotron_speech.asr import AsrEngine
    from nemotron_speech.asr.model import load_nemo_model

    model = load_nemo_model(config.model, device=config.device)
    right_context = config.right_context
    if right_context is None:
        right_context = _default_right_context(model)
    engine = AsrEngine(
        model,
        right_context=right_context,
        max_buffered_seconds=config.max_buffered_seconds + ENGINE_BOUND_MARGIN_S,
        precision=config.precision,
        cuda_graphs=config.cuda_graphs and config.device.startswith("cuda"),
        max_graph_batch=max_graph_batch(config),
    )
    engine.warmup()
    return engine


def max_graph_batch(config: ServerConfig) -> int:
    """The largest batch the engine captures: a batch never exceeds the streams admitted, and
    larger buckets would only hold memory."""
    return max(1, min(1024, config.max_streams))


def _default_right_context(model) -> int | None:
    """The seed's right context where the model supports it, else None (the model's own)."""
    from nemotron_speech.asr.model import supported_right_contexts

    supported = supported_right_contexts(model)
    if SEED_RIGHT_CONTEXT in supported:
        return SEED_RIGHT_CONTEXT
    log.info(
        "the model has no right context %d (it supports %s): using its default",
        SEED_RIGHT_CONTEXT,
        supported,
    )
    return None


async def serve_until_signalled(server: AsrServer) -> None:
    """Run `server` until SIGTERM or SIGINT, then shut it down gracefully."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.run()


def write_port(path: Path, port: int) -> None:
    """Write the port whole (a temporary file renamed), so a reader never sees half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{port}\n")
    partial.replace(path)


def _with_type(response: Response, content_type: str) -> Response:
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response
