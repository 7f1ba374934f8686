"""Two throwaway Linux network namespaces joined by a veth pair: a LAN with two hosts on it.

Addresses come only from 198.18.0.0/15 (RFC 2544, reserved for network tests) and exist only
inside namespaces created here, with random names so parallel runs do not clash; deleting a
namespace deletes its interfaces, and `veth_lan` deletes both on exit. There is no default route
and no shared loopback, so nothing leaves the pair and nothing of the host is reachable except
what `forward_loopback` relays. Needs root (`ip netns`, setns).

Processes and sockets are put into a namespace with `Lan.inside`: it switches only the calling
thread (setns), and a socket or child process created meanwhile stays in that namespace.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

BOT_ADDRESS = "198.18.0.1"
BROWSER_ADDRESS = "198.18.0.2"
# also in the bot's namespace, on a link of its own: the browser has no route to it
UNREACHABLE_ADDRESS = "198.19.0.1"
CLONE_NEWNET = 0x40000000  # from <sched.h>
_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(RuntimeError):
    """`ip netns` is missing or not permitted here (not root, or no network namespaces)."""


def _ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise NamespaceError("`ip` not found: install iproute2") from exc
    except subprocess.CalledProcessError as exc:
        raise NamespaceError(f"ip {' '.join(args)}: {exc.stderr.strip()}") from exc


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(f"setns: {os.strerror(err)}")


@dataclass(frozen=True)
class Lan:
    """Names of the two namespaces: `bot` holds BOT_ADDRESS (and UNREACHABLE_ADDRESS),
    `browser` holds BROWSER_ADDRESS."""

    bot: str
    browser: str

    @contextmanager
    def inside(self, namespace: str) -> Iterator[None]:
        """Run the block's network calls and child processes in `namespace` (this thread only)."""
        with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{namespace}") as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())


@contextmanager
def veth_lan() -> Iterator[Lan]:
    """Create the two namespaces and their link; remove them on exit, whatever happened."""
    tag = secrets.token_hex(3)
    lan = Lan(bot=f"nemo-bot-{tag}", browser=f"nemo-browser-{tag}")
    bot_if, browser_if, lone_if, lone_peer = (f"{p}{tag}" for p in ("vb", "vc", "vu", "vv"))
    created: list[str] = []
    try:
        for name in (lan.bot, lan.browser):
            _ip("netns", "add", name)
            created.append(name)
        _ip("link", "add", bot_if, "netns", lan.bot, "type", "veth",
            "peer", "name", browser_if, "netns", lan.browser)  # fmt: skip
        # the unreachable address sits on a veth pair with both ends in the bot's namespace
        # (the `dummy` link type is missing from some kernels)
        _ip("-n", lan.bot, "link", "add", lone_if, "type", "veth", "peer", "name", lone_peer)
        _ip("-n", lan.bot, "addr", "add", f"{BOT_ADDRESS}/24", "dev", bot_if)
        _ip("-n", lan.bot, "addr", "add", f"{UNREACHABLE_ADDRESS}/24", "dev", lone_if)
        _ip("-n", lan.browser, "addr", "add", f"{BROWSER_ADDRESS}/24", "dev", browser_if)
        for namespace, links in ((lan.bot, ("lo", bot_if, lone_if, lone_peer)),
                                 (lan.browser, ("lo", browser_if))):  # fmt: skip
            for link in links:
                _ip("-n", namespace, "link", "set", link, "up")
        yield lan
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _relay(lan: Lan, client: socket.socket, port: int, namespace: str | None) -> None:
    with lan.inside(namespace) if namespace else nullcontext():
        upstream = socket.create_connection(("127.0.0.1", port))
    with client, upstream:
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()


@contextmanager
def forward_loopback(lan: Lan, port: int, into: str, source: str | None = None) -> Iterator[None]:
    """Make 127.0.0.1:`port` of namespace `source` (None: the test's own) answer at
    127.0.0.1:`port` inside namespace `into`, as `ssh -L` does between machines.

    Used for the servers the tests share (ASR, vLLM: the bot reaches them on loopback, as on the
    Spark) and for the page through an SSH tunnel (bot's loopback to the browser's).
    """
    with lan.inside(into):
        listener = socket.create_server(("127.0.0.1", port))

    def accept() -> None:  # started outside `inside`: relays connect from `source`
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed on exit
                return
            threading.Thread(target=_relay, args=(lan, client, port, source), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(5)
