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
import urllib.request

import pytest
from browser import Chromium, find_chromium
from server_fixtures import running_server
from tools import unavailable
from voice_page import ROOT, SENTENCE, bot_command, microphone_wav, running_bot, talk, turn_from_log

from nemotron_speech.llm.launcher import free_port
from nemotron_speech.testing.sentences import SENTENCES

pytestmark = pytest.mark.slow
SCREENSHOT = ROOT / "docs" / "images" / "voice-bot.png"


@pytest.fixture(scope="module")
def asr_server(asr_model_path, tmp_path_factory):
    with running_server(asr_model_path, tmp_path_factory.mktemp("asr")) as server:
        yield server


@pytest.fixture
def bot(asr_server, vllm_server, tmp_path):
    """`python pipelines/voice_bot.py -t webrtc` on a free port; yields (base URL, log path)."""
    if find_chromium() is None:
        unavailable("chromium missing: run .ci/setup_browser.sh")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "bot.log"
    with running_bot(bot_command(asr_server.url, vllm_server, "127.0.0.1", port), url, log_path):
        yield url, log_path


def test_browser_talks_to_bot(bot, speech_wavs, tmp_path):
    url, log_path = bot
    sentence = SENTENCES[SENTENCE]
    mic = microphone_wav(speech_wavs[SENTENCE], tmp_path / "mic.wav")
    with urllib.request.urlopen(f"{url}/client/", timeout=10) as prebuilt:
        assert b"<title>Pipecat UI</title>" in prebuilt.read()
    with Chromium(mic) as browser:
        talk(browser, f"{url}/voice/", sentence, log_path, tmp_path / "voice-bot.png")

    turn = turn_from_log(log_path.read_text(), sentence)
    print("\n".join(turn.splitlines()[:10]))
    if os.environ.get("NEMOTRON_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "voice-bot.png", SCREENSHOT)
