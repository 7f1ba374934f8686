"""The voice bot as users start it, and one spoken turn through its page in headless Chromium.

Shared by the browser tests (loopback, and the two-namespace LAN): `bot_command` is
`pipelines/voice_bot.py -t webrtc` against the test ASR server and vLLM with the espeak TTS,
`running_bot` waits until it serves /voice/, and `talk` plays a test sentence into the page's
fake microphone and waits for the whole round trip: ICE connected, the sentence shown as the
user's words (RTVI over the data channel), audible bot audio after it (the page's level meter),
and the bot's V2V log line.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from browser import Chromium
from server_fixtures import pcm16, stop_process

from nemotron_speech.testing.fixture_llm import SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parents[1]
VOICE_BOT = ROOT / "pipelines" / "voice_bot.py"
SENTENCE = 11  # "can you hear me now good"
# seconds of audible bot audio the page has received (its level meter keeps count)
HEARD_SECS = "Number(document.getElementById('bot-heard').dataset.secs)"
# WebRTC's count of the bot audio's energy (sum of level^2 x seconds, level 1 = full scale):
# counts audio too quiet for the meter's threshold, e.g. a random-weights model's noise
BOT_AUDIO_ENERGY = (
    "pc.getStats().then(stats => [...stats.values()]"
    ".filter(r => r.type === 'inbound-rtp' && r.kind === 'audio')"
    ".reduce((sum, r) => sum + (r.totalAudioEnergy || 0), 0))"
)
LEAD_SECS = 4.0  # silence before the sentence: connect, ICE and the greeting happen in it
ICE_CONNECTED = "pc !== null && ['connected', 'completed'].includes(pc.iceConnectionState)"


def bot_command(asr_url: str, vllm_server, host: str, port: int, *options: str) -> list[str]:
    """The bot with short replies, espeak and a short greeting, on `host`:`port`."""
    return [
        sys.executable, str(VOICE_BOT),
        "-t", "webrtc", "--host", host, "--port", str(port),
        "--asr-url", asr_url,
        "--llm-url", vllm_server.base_url, "--llm-model", vllm_server.model, "--max-tokens", "24",
        "--tts", "espeak", "--system-prompt", SYSTEM_PROMPT, "--greeting", "Hello!",
        *options,
    ]  # fmt: skip


@contextmanager
def running_bot(
    command: list[str],
    url: str,
    log_path: Path,
    tls: ssl.SSLContext | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """Start `command` (with `env` added) and wait until `url`/voice/ answers; SIGINT it on exit.
    `tls` verifies an https `url`."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/voice/", timeout=2, context=tls).close()
                break
            except OSError:
                assert process.poll() is None, f"bot exited:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"bot not serving:\n{log_path.read_text()}"
                time.sleep(0.3)
        yield process
    finally:
        # the bot then cancels its sessions and exits, but the interpreter's exit alone takes
        # 0.5-2 s, and no test needs it: what they read of the bot's log is written before it is
        # stopped (test_browser_talks_to_bot checks the exit on SIGINT itself)
        stop_process(process, signal.SIGINT, timeout=1)


def microphone_wav(speech_wav: Path, path: Path) -> Path:
    """The sentence after LEAD_SECS of silence, then 20 s of silence (Chromium loops the file)."""
    rate = 16000
    audio = b"\0" * int(2 * rate * LEAD_SECS) + pcm16(speech_wav) + b"\0" * (2 * rate * 20)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(audio)
    return path


def talk(
    browser: Chromium,
    page_url: str,
    sentence: str,
    log_path: Path,
    screenshot: Path,
    connect_timeout: float = 30,
    heard: str = HEARD_SECS,
    answer_more_than: float = 0.5,
) -> None:
    """Open the page, click Connect and wait for the whole round trip (TimeoutError if not):
    the answer is heard when the page's `heard` expression grows by `answer_more_than`."""
    user_said = (
        "[...document.querySelectorAll('.msg.user:not(.interim)')]"
        f".some(m => m.innerText.toLowerCase().includes({sentence!r}))"
    )
    browser.call("Page.navigate", url=page_url)
    browser.wait_for("document.readyState === 'complete'", 30)
    browser.evaluate("document.getElementById('connect').click()")
    try:
        browser.wait_for(ICE_CONNECTED, connect_timeout)
        browser.wait_for(user_said, 60)
        heard_before_answer = float(browser.evaluate(heard))
        # the answer: audible bot audio arrives after the user's turn, and the bot logs V2V
        more = f"v => v > {heard_before_answer} + {answer_more_than}"
        browser.wait_for(f"Promise.resolve({heard}).then({more})", 60)
        deadline = time.monotonic() + 30
        while "endpointing wait" not in log_path.read_text():  # a user turn's V2V line
            if time.monotonic() > deadline:
                raise TimeoutError("no V2V breakdown in the bot's log")
            time.sleep(0.2)
        browser.wait_for("document.querySelector('.msg.bot') !== null", 30)
        time.sleep(1.0)  # let the rest of the answer's text arrive
    finally:
        browser.screenshot(screenshot)
        print(f"screenshot: {screenshot}; bot log: {log_path}")


def turn_from_log(log: str, sentence: str) -> str:
    """The bot's V2V breakdown of the turn, after checking the LLM got the user's sentence."""
    assert f"'content': '{sentence}'" in log, "the LLM was not sent the user's sentence"
    assert "client connected" in log
    return log[log.rindex("voice-to-voice", 0, log.index("endpointing wait")) :]
