"""Headless Chromium driven over the DevTools protocol, with a fake microphone.

Only `websockets` (already a dependency) and Debian's `chromium` (`.ci/setup_browser.sh`) are
needed: no browser download, no Node. The microphone plays a WAV file
(`--use-file-for-fake-audio-capture`), and permission prompts are accepted automatically.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server_fixtures import stop_process
from websockets.sync.client import connect

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # show the real host address in ICE candidates rather than an mDNS name nobody resolves
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--window-size=1280,800",
]


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)


class Chromium:
    """One headless browser with one page; `call` sends DevTools commands to that page."""

    def __init__(
        self, microphone_wav: Path, executable: str | None = None, flags: Sequence[str] = ()
    ):
        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError("chromium not found: run .ci/setup_browser.sh")
        # Chromium's helper processes can still write to the profile as it is removed
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
        self.log_path = Path(self._profile.name) / "chromium.log"
        with open(self.log_path, "w") as log:
            self._process = subprocess.Popen(
                [
                    executable,
                    *CHROMIUM_FLAGS,
                    *flags,
                    f"--use-file-for-fake-audio-capture={microphone_wav}",
                    f"--user-data-dir={self._profile.name}",
                    "--remote-debugging-port=0",
                    "about:blank",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._ids = itertools.count(1)
        self._ws = connect(self._page_url(), max_size=None, open_timeout=30)
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _page_url(self) -> str:
        """The page target's DevTools URL, from the port Chromium writes into its profile."""
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as r:
            targets = json.load(r)
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def call(self, method: str, **params: Any) -> dict:
        """Send one command and return its result (events arriving meanwhile are dropped)."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, interval: float = 0.25) -> Any:
        """Poll `expression` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for: {expression}")
            time.sleep(interval)
        return value

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._ws.close()
        finally:
            stop_process(self._process, signal.SIGTERM, timeout=10)
            self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
