"""Who may start a voice-bot session over the network, and over what: offer token and HTTPS.

pipecat's runner answers `/start`, `/api/offer`, `/sessions/...` and its WebSocket routes for
anyone who reaches its port. On loopback that is this machine's users; beyond it, anyone on the
network, and every session they open spends GPU time. So the bot refuses to listen beyond
loopback without an offer token (unless told `--no-offer-token`), and with a token every route
except the pages themselves needs it. A browser on another machine also needs HTTPS before it
offers a microphone, hence `--ssl-certfile` / `--ssl-keyfile`.
"""

from __future__ import annotations

import argparse
import hmac
import importlib
import ipaddress
import os
import ssl
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from loguru import logger
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# Pages only: their code is public, the sessions they open are not.
PUBLIC_PATHS = frozenset({"/", "/voice", "/voice/", "/client", "/favicon.ico"})
PUBLIC_PREFIX = "/client/"  # pipecat's prebuilt UI (static files)
CERT_COMMAND = (
    'openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=nemotron-bot" '
    '-addext "subjectAltName=IP:<address>" -keyout key.pem -out cert.pem'
)
TOKEN_HELP = (
    "open the page as /voice/?token=<token>, or send 'Authorization: Bearer <token>'; the token "
    "is the bot's --offer-token (NEMOTRON_OFFER_TOKEN)"
)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class OfferTokenMiddleware:
    """ASGI middleware: every HTTP and WebSocket route but the pages needs the offer token.

    Deny by default, so routes pipecat adds later (it has `/ws-client`, `/files`, `/sessions`,
    ...) are covered too. The token comes as `Authorization: Bearer <token>` or `?token=`
    (WebSocket clients cannot always set headers).
    """

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self._token = token.encode()

    def _allowed(self, scope: Scope) -> bool:
        path = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX):
            return True
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        given = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not given:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        message = f"missing or wrong offer token for {scope['path']}: {TOKEN_HELP}"
        logger.warning(f"refused {scope['type']} {scope['path']}: missing or wrong offer token")
        if scope["type"] == "http":
            await JSONResponse({"detail": message}, status_code=401)(scope, receive, send)
        else:  # closing before accept makes the server answer the handshake with 403
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})


def add_access_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags that say who may connect; defaults come from `NEMOTRON_<FLAG>` variables."""
    group = parser.add_argument_group("who may connect (env: NEMOTRON_<NAME>)")
    group.add_argument(
        "--offer-token",
        default=os.environ.get("NEMOTRON_OFFER_TOKEN") or None,
        help="secret every session request must carry (the page takes it as /voice/?token=...); "
        "required when --host is not loopback",
    )
    group.add_argument(
        "--no-offer-token",
        action="store_true",
        default=_env_flag("NEMOTRON_NO_OFFER_TOKEN"),
        help="listen beyond loopback without a token: anyone who reaches the port can open "
        "sessions",
    )
    group.add_argument(
        "--ssl-certfile",
        default=os.environ.get("NEMOTRON_SSL_CERTFILE") or None,
        help="serve HTTPS with this PEM certificate (a LAN browser needs HTTPS for the mic)",
    )
    group.add_argument(
        "--ssl-keyfile",
        default=os.environ.get("NEMOTRON_SSL_KEYFILE") or None,
        help="private key of --ssl-certfile",
    )
    return parser


def access_problem(args: argparse.Namespace) -> str | None:
    """Why these settings must not be served, with the fix; None when they are fine."""
    host = getattr(args, "host", "localhost")
    if not is_loopback(host) and not args.offer_token and not args.no_offer_token:
        return (
            f"refusing to listen on {host} without an offer token: anyone who reaches this "
            "port could open sessions on this machine's GPU. Set --offer-token (or "
            "NEMOTRON_OFFER_TOKEN), e.g. --offer-token $(openssl rand -hex 16), or pass "
            "--no-offer-token to accept that"
        )
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        return "--ssl-certfile and --ssl-keyfile go together: give both or neither"
    if args.ssl_certfile:
        for path in (args.ssl_certfile, args.ssl_keyfile):
            if not Path(path).is_file():
                return f"TLS file {path} not found; create a certificate with: {CERT_COMMAND}"
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                args.ssl_certfile, args.ssl_keyfile
            )
        except (ssl.SSLError, OSError) as exc:
            return (
                f"cannot use {args.ssl_certfile} with {args.ssl_keyfile} ({exc}); create a "
                f"matching pair with: {CERT_COMMAND}"
            )
    return None


def secure_runner(args: argparse.Namespace, app: Any = None) -> None:
    """Wire the token and TLS into pipecat's runner (its module-level app and uvicorn call)."""
    runner = importlib.import_module("pipecat.runner.run")
    app = app if app is not None else runner.app
    if args.offer_token:
        app.add_middleware(OfferTokenMiddleware, token=args.offer_token)
    if args.ssl_certfile:
        import uvicorn

        # pipecat 1.14's main() ends in uvicorn.run(app, host=..., port=...) with no TLS options
        runner.uvicorn = SimpleNamespace(
            run=partial(uvicorn.run, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
        )
    scheme = "https" if args.ssl_certfile else "http"
    host = getattr(args, "host", "localhost")
    shown = "<this machine's address>" if host in ("0.0.0.0", "::") else host
    query = "?token=<offer token>" if args.offer_token else ""
    logger.info(f"voice page: {scheme}://{shown}:{getattr(args, 'port', 7860)}/voice/{query}")


class BotArgumentParser(argparse.ArgumentParser):
    """The voice bot's parser, with the access flags.

    pipecat's `main(parser)` parses the command line and starts serving right after, so the end
    of `parse_args` is where unsafe settings are refused (a usage error, exit code 2) and the
    token and TLS are wired in.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        add_access_arguments(self)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        if problem := access_problem(parsed):
            self.error(problem)
        secure_runner(parsed)
        return parsed
