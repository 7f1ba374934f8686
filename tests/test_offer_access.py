"""Who may open voice-bot sessions: the offer token, the bind-address rule, the TLS files.

The middleware runs on a small FastAPI app with the routes pipecat's runner registers (the
two-namespace browser test checks it inside the real runner); the refusal to listen beyond
loopback without a token is checked through `pipelines/voice_bot.py` itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from nemotron_speech.voice_agent.access import (
    OfferTokenMiddleware,
    access_problem,
    add_access_arguments,
    is_loopback,
)

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret"


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()

    @app.post("/api/offer")
    async def offer():
        return {"answer": True}

    @app.get("/voice/")
    async def page():
        return {"page": True}

    @app.get("/client/index.html")
    async def prebuilt():
        return {"prebuilt": True}

    @app.websocket("/ws-client")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("session")
        await websocket.close()

    app.add_middleware(OfferTokenMiddleware, token=TOKEN)
    return TestClient(app)


def test_session_routes_need_the_token(client):
    refused = client.post("/api/offer")
    assert refused.status_code == 401
    assert "/voice/?token=" in refused.json()["detail"]
    assert "/api/offer" in refused.json()["detail"]
    assert client.post("/api/offer", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/api/offer?token=wrong").status_code == 401
    ok = client.post("/api/offer", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json() == {"answer": True}
    assert client.post(f"/api/offer?token={TOKEN}").status_code == 200


def test_pages_are_public(client):
    assert client.get("/voice/").json() == {"page": True}
    assert client.get("/client/index.html").json() == {"prebuilt": True}


def test_websocket_sessions_need_the_token(client):
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws-client"):
        pass
    assert refused.value.code == 1008
    with client.websocket_connect(f"/ws-client?token={TOKEN}") as ws:
        assert ws.receive_text() == "session"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.50", False), ("spark.local", False)],
)  # fmt: skip
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def parse(*argv: str, host: str = "localhost") -> argparse.Namespace:
    args = add_access_arguments(argparse.ArgumentParser()).parse_args(argv)
    args.host = host
    return args


def test_beyond_loopback_needs_a_token_or_the_opt_out():
    problem = access_problem(parse(host="0.0.0.0"))
    assert problem and "0.0.0.0" in problem and "--offer-token" in problem
    assert "--no-offer-token" in problem
    assert access_problem(parse("--offer-token", TOKEN, host="0.0.0.0")) is None
    assert access_problem(parse("--no-offer-token", host="0.0.0.0")) is None
    assert access_problem(parse(host="127.0.0.1")) is None


def test_flags_read_their_environment_variables(monkeypatch):
    monkeypatch.setenv("NEMOTRON_OFFER_TOKEN", TOKEN)
    monkeypatch.setenv("NEMOTRON_NO_OFFER_TOKEN", "1")
    monkeypatch.setenv("NEMOTRON_SSL_CERTFILE", "/c.pem")
    monkeypatch.setenv("NEMOTRON_SSL_KEYFILE", "/k.pem")
    args = parse()
    assert (args.offer_token, args.no_offer_token) == (TOKEN, True)
    assert (args.ssl_certfile, args.ssl_keyfile) == ("/c.pem", "/k.pem")
    monkeypatch.setenv("NEMOTRON_OFFER_TOKEN", "")  # compose passes unset variables as ""
    monkeypatch.setenv("NEMOTRON_NO_OFFER_TOKEN", "")
    assert (parse().offer_token, parse().no_offer_token) == (None, False)


def test_tls_files_are_checked_before_serving(tmp_path):
    missing = tmp_path / "cert.pem"
    problem = access_problem(parse("--ssl-certfile", str(missing), "--ssl-keyfile", str(missing)))
    assert problem and str(missing) in problem and "openssl req -x509" in problem
    assert "give both" in access_problem(parse("--ssl-certfile", str(missing)))
    for name in ("a", "b"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=test", "-keyout", f"{name}.key", "-out", f"{name}.pem"],
            cwd=tmp_path, check=True, capture_output=True,
        )  # fmt: skip
    cert, key, other_key = (str(tmp_path / f) for f in ("a.pem", "a.key", "b.key"))
    assert access_problem(parse("--ssl-certfile", cert, "--ssl-keyfile", key)) is None
    mismatch = access_problem(parse("--ssl-certfile", cert, "--ssl-keyfile", other_key))
    assert mismatch and "matching pair" in mismatch


def test_voice_bot_refuses_all_addresses_without_a_token():
    # no ASR/LLM here: the start-up checks (voice_agent/preflight.py), which run first, are skipped
    result = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "voice_bot.py"), "-t", "webrtc",
         "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NEMOTRON_SKIP_PREFLIGHT": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without an offer token" in result.stderr
    assert "Traceback" not in result.stderr
