"""Browser end to end: headless Chromium talks to `pipelines/voice_bot.py -t webrtc`.

The bot runs exactly as a user starts it (pipecat's runner, SmallWebRTC), against the real ASR
server (generated model) and vLLM (fixture model), with the espeak-ng TTS. Chromium opens the
bot's offline page (/voice/) with a fake microphone playing a test sentence, clicks Connect, and
waits until the page shows the sentence as the user's words (RTVI over the data channel) and the
bot's answer is heard: audible audio arrives over WebRTC (the page's level meter). It saves a
screenshot; with NEMOTRON_UPDATE_SCREENSHOT=1 it also refreshes docs/images/voice-bot.png.

pipecat's prebuilt UI (/client/) is only checked to be served: its WebRTC client gets the
microphone through Daily's call-machine bundle, fetched from a CDN, which CI cannot reach.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import wave
from pathlib import Path

import pytest
from browser import Chromium, find_chromium
from server_fixtures import pcm16, running_server, stop_process
from vllm_server import vllm_server_fixture  # noqa: F401  (registers `vllm_server`)

from nemotron_speech.llm.server import free_port
from nemotron_speech.testing.fixture_llm import SYSTEM_PROMPT
from nemotron_speech.testing.sentences import SENTENCES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="chromium missing: .ci/setup_browser.sh"),
]
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "images" / "voice-bot.png"
SENTENCE = 11  # "can you hear me now good"
# seconds of audible bot audio the page has received (its level meter keeps count)
HEARD_SECS = "Number(document.getElementById('bot-heard').dataset.secs)"
LEAD_SECS = 4.0  # silence before the sentence: connect, ICE and the greeting happen in it


@pytest.fixture(scope="module")
def asr_server(asr_model_path, tmp_path_factory):
    with running_server(asr_model_path, tmp_path_factory.mktemp("asr")) as server:
        yield server


@pytest.fixture
def bot(asr_server, vllm_server, tmp_path):
    """`python pipelines/voice_bot.py -t webrtc` on a free port; yields (base URL, log path)."""
    port = free_port()
    log_path = tmp_path / "bot.log"
    command = [
        sys.executable, str(ROOT / "pipelines" / "voice_bot.py"),
        "-t", "webrtc", "--host", "127.0.0.1", "--port", str(port),
        "--asr-url", asr_server.url,
        "--llm-url", vllm_server.base_url, "--llm-model", vllm_server.model, "--max-tokens", "24",
        "--tts", "espeak", "--system-prompt", SYSTEM_PROMPT, "--greeting", "Hello!",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/voice/", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, f"bot exited:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"bot not serving:\n{log_path.read_text()}"
                time.sleep(0.3)
        yield url, log_path
    finally:
        stop_process(process, signal.SIGINT, timeout=20)


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


def test_browser_talks_to_bot(bot, speech_wavs, tmp_path):
    url, log_path = bot
    sentence = SENTENCES[SENTENCE]
    mic = microphone_wav(speech_wavs[SENTENCE], tmp_path / "mic.wav")
    with urllib.request.urlopen(f"{url}/client/", timeout=10) as prebuilt:
        assert b"<title>Pipecat UI</title>" in prebuilt.read()
    user_said = (
        "[...document.querySelectorAll('.msg.user:not(.interim)')]"
        f".some(m => m.innerText.toLowerCase().includes({sentence!r}))"
    )
    with Chromium(mic) as browser:
        browser.call("Page.navigate", url=f"{url}/voice/")
        browser.wait_for("document.readyState === 'complete'", 30)
        browser.evaluate("document.getElementById('connect').click()")
        try:
            browser.wait_for(user_said, 60)
            heard_before_answer = float(browser.evaluate(HEARD_SECS))
            # the answer: audible bot audio arrives after the user's turn, and the bot logs V2V
            browser.wait_for(f"{HEARD_SECS} > {heard_before_answer} + 0.5", 60)
            deadline = time.monotonic() + 30
            while "endpointing wait" not in log_path.read_text():  # a user turn's V2V line
                assert time.monotonic() < deadline, "no V2V breakdown in the bot's log"
                time.sleep(0.2)
            browser.wait_for("document.querySelector('.msg.bot') !== null", 30)
            time.sleep(1.0)  # let the rest of the answer's text arrive
        finally:
            browser.screenshot(tmp_path / "voice-bot.png")
            print(f"screenshot: {tmp_path / 'voice-bot.png'}; bot log: {log_path}")

    log = log_path.read_text()
    assert f"'content': '{sentence}'" in log, "the LLM was not sent the user's sentence"
    assert "client connected" in log
    turn = log[log.rindex("voice-to-voice", 0, log.index("endpointing wait")) :]
    print("\n".join(turn.splitlines()[:10]))
    if os.environ.get("NEMOTRON_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "voice-bot.png", SCREENSHOT)
