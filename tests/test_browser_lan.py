"""A browser on another machine of the LAN talks to the bot: two network namespaces, one veth.

The bot (`pipelines/voice_bot.py`, as users start it) and headless Chromium run in two network
namespaces joined by a veth pair (tests/netns.py: 198.18.0.0/15 only, no shared loopback, no
route anywhere else), so the page, the signalling and the media all cross the "LAN". The bot is
set up the two ways docs/voice-bot.md's "From a laptop on the LAN" gives, with the commands run
from the doc: HTTPS on all addresses with an offer token and a certificate from the documented
openssl line; or on loopback with the page brought to the browser's localhost by a TCP relay
(what `ssh -L` does). Both pass ICE servers through PIPECAT_ICE_SERVERS (a STUN responder on the
LAN that counts who asked). The round trip is the loopback browser test's (tests/voice_page.py).

Negative control: the HTTPS bot advertising only an address the browser has no route to
(aioice's host addresses patched in the bot process, as a bot on Docker's bridge network offers
only its container address): the round trip must fail. Needs root for `ip netns`; in CI a
missing capability fails the test instead of skipping it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from aioice import stun
from browser import Chromium, find_chromium
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from netns import (
    BOT_ADDRESS,
    BROWSER_ADDRESS,
    UNREACHABLE_ADDRESS,
    Lan,
    NamespaceError,
    forward_loopback,
    veth_lan,
)
from tools import unavailable
from voice_page import SENTENCE, bot_command, microphone_wav, running_bot, talk, turn_from_log

from nemotron_speech.testing.sentences import SENTENCES

pytestmark = pytest.mark.slow
PORT = 7860  # the bot's namespace is fresh: the documented port is free
URL = f"https://{BOT_ADDRESS}:{PORT}"
STUN_PORT = 3478
NEGATIVE_WAIT = 10  # seconds without ICE; the positive case connects ~1 s after its offer
DOC = Path(__file__).resolve().parents[1] / "docs" / "voice-bot.md"
# runs voice_bot.py with aioice offering host candidates on UNREACHABLE_ADDRESS only
UNREACHABLE_BOT = (
    "import os, runpy, sys, aioice.ice;"
    f"aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [{UNREACHABLE_ADDRESS!r}];"
    "sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0]));"
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
SELECTED_PAIR = """(async () => {
  const stats = await pc.getStats();
  const transport = [...stats.values()].find((s) => s.type === 'transport');
  const pair = stats.get(transport.selectedCandidatePairId);
  const [local, remote] = [stats.get(pair.localCandidateId), stats.get(pair.remoteCandidateId)];
  return {local: local.address, remote: remote.address, type: remote.candidateType};
})()"""


@contextmanager
def stun_server(lan: Lan) -> Iterator[set[str]]:
    """A STUN binding responder at BOT_ADDRESS:STUN_PORT; yields the addresses that asked."""
    with lan.inside(lan.bot):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((BOT_ADDRESS, STUN_PORT))
    sock.settimeout(0.2)
    asked: set[str] = set()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
                request = stun.parse_message(data)
            except (TimeoutError, ValueError):
                continue
            if request.message_method != stun.Method.BINDING:
                continue
            asked.add(addr[0])
            response = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.RESPONSE,
                transaction_id=request.transaction_id,
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = addr
            sock.sendto(bytes(response), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield asked
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def spki_hash(cert: Path) -> str:
    """Base64 SHA-256 of the certificate's public key, as Chromium's SPKI allow-list takes it."""
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def lan(asr_server, vllm_server):
    """The namespaces, the test servers forwarded into the bot's, and a STUN server."""
    if find_chromium() is None:
        unavailable("chromium missing: run .ci/setup_browser.sh")
    with ExitStack() as stack:
        try:
            net = stack.enter_context(veth_lan())
        except NamespaceError as exc:
            unavailable(f"no network namespaces here (run as root with iproute2): {exc}")
        for port in (asr_server.port, vllm_server.spec.port):
            stack.enter_context(forward_loopback(net, port, into=net.bot))
        asked = stack.enter_context(stun_server(net))
        yield net, asked


def documented_https(workdir: Path) -> tuple[str, list[str]]:
    """Run docs/voice-bot.md's "HTTPS on the LAN" lines in `workdir` for SPARK_IP=BOT_ADDRESS;
    return the token they made and the bot's arguments from the block's last line."""
    block = re.search(r"### HTTPS on the LAN\n\n```sh\n(.*?)```", DOC.read_text(), re.S)[1]
    *setup, run = block.strip().splitlines()
    setup = [line for line in setup if not line.startswith("SPARK_IP=")]
    env = {**os.environ, "SPARK_IP": BOT_ADDRESS}
    made = subprocess.run(
        ["bash", "-ec", "\n".join(setup)], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    argv = shlex.split(run)
    assert argv[:2] == ["python", "pipelines/voice_bot.py"], run
    return made.stdout.split()[-1], argv[2:]


@contextmanager
def lan_session(lan, asr_server, vllm_server, tmp_path, speech_wavs, *, tunnel=False, python=()):
    """The bot in the bot's namespace, set up as documented (HTTPS, or loopback behind a tunnel),
    run by `python` (default: this interpreter); Chromium in the browser's namespace.

    Yields the browser, the page's URL and the bot's log."""
    net, asked = lan
    asked.clear()
    env = {"PIPECAT_ICE_SERVERS": f"stun:{BOT_ADDRESS}:{STUN_PORT}"}
    if tunnel:
        options, ready, trust, flags = [], f"http://127.0.0.1:{PORT}", None, []
        page = f"http://localhost:{PORT}/voice/"
    else:
        env["NEMOTRON_OFFER_TOKEN"], options = documented_https(tmp_path)
        ready, page = URL, f"{URL}/voice/?token={env['NEMOTRON_OFFER_TOKEN']}"
        cert = tmp_path / "models" / "tls" / "cert.pem"
        trust = ssl.create_default_context(cafile=cert)  # the cert is valid for the address
        # the user accepted the self-signed certificate: exactly that one, by its public key
        flags = [f"--ignore-certificate-errors-spki-list={spki_hash(cert)}"]
    # the documented options come last, so their --host wins
    command = bot_command(asr_server.url, vllm_server, "127.0.0.1", PORT, *options)
    command[:1] = python or command[:1]
    log_path = tmp_path / "bot.log"
    mic = microphone_wav(speech_wavs[SENTENCE], tmp_path / "mic.wav")
    with ExitStack() as stack:
        with net.inside(net.bot):
            stack.enter_context(running_bot(command, ready, log_path, trust, env))
        if tunnel:
            stack.enter_context(forward_loopback(net, PORT, into=net.browser, source=net.bot))
        with net.inside(net.browser):
            browser = stack.enter_context(Chromium(mic, flags=flags))
        yield browser, page, log_path


@pytest.mark.parametrize("tunnel", [False, True], ids=["https", "ssh-tunnel"])
def test_lan_browser_talks_to_bot(tunnel, lan, asr_server, vllm_server, speech_wavs, tmp_path):
    sentence = SENTENCES[SENTENCE]
    session = lan_session(lan, asr_server, vllm_server, tmp_path, speech_wavs, tunnel=tunnel)
    with session as (browser, page, log_path):
        talk(browser, page, sentence, log_path, tmp_path / "lan.png")
        pair = browser.evaluate(SELECTED_PAIR)
        secure = browser.evaluate("window.isSecureContext")
        ice_servers = browser.evaluate("pc.getConfiguration().iceServers.map((s) => s.urls)")
        without_token = browser.evaluate(
            "fetch('/start', {method: 'POST', body: '{}'}).then((r) => r.status)"
        )

    turn = turn_from_log(log := log_path.read_text(), sentence)
    print("\n".join(turn.splitlines()[:10]))
    assert secure is True
    # media went host to host across the link, to the address the bot advertised, also when
    # the page came through the tunnel
    assert pair == {"local": BROWSER_ADDRESS, "remote": BOT_ADDRESS, "type": "host"}
    # the page trickled its candidates (PATCH), and both peers used the bot's ICE servers
    assert re.search(rf"Adding remote candidate: .*{re.escape(BROWSER_ADDRESS)}", log)
    assert ice_servers == [[f"stun:{BOT_ADDRESS}:{STUN_PORT}"]]
    assert {BOT_ADDRESS, BROWSER_ADDRESS} <= lan[1]
    # a token is needed exactly when the bot has one (beyond loopback)
    assert without_token == (200 if tunnel else 401)


def test_unreachable_advertised_address_fails(lan, asr_server, vllm_server, speech_wavs, tmp_path):
    """Negative control: the HTTPS case, but the bot advertises an address the browser cannot
    reach. The answer must carry only that address, and no audio may flow."""
    python = [sys.executable, "-c", UNREACHABLE_BOT]
    session = lan_session(lan, asr_server, vllm_server, tmp_path, speech_wavs, python=python)
    with session as (browser, page, log_path):
        with pytest.raises(TimeoutError):
            talk(
                browser,
                page,
                SENTENCES[SENTENCE],
                log_path,
                tmp_path / "lan-unreachable.png",
                connect_timeout=NEGATIVE_WAIT,
            )
        answer = browser.evaluate("pc.remoteDescription.sdp")
    advertised = re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", answer, re.M)
    assert advertised and set(advertised) == {UNREACHABLE_ADDRESS}
    assert "client connected" not in log_path.read_text()
