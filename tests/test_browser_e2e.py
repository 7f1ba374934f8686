"""Browser end to end: headless Chromium talks to `pipelines/voice_bot.py -t webrtc`.

The bot runs exactly as a user starts it (pipecat's runner, SmallWebRTC), against the real ASR
server (generated model) and vLLM (fixture model), with the espeak-ng TTS. Chromium opens the
bot's offline page (/voice/) with a fake microphone playing a test sentence, clicks Connect, and
waits until the page shows the sentence as the user's words (RTVI over the data channel) and the
bot's answer is heard: audible audio arrives over WebRTC (the page's level meter). It saves a
screenshot; with NEMOTRON_UPDATE_SCREENSHOT=1 it also refreshes docs/images/voice-bot.png.

A second case runs the same round trip with `--tts magpie` on the generated Magpie test model
(tests/assets/tts/, CPU): its random weights speak noise, too quiet for the page's level meter,
so it checks that Magpie's audio reaches the page (WebRTC's received audio energy grows after
the user's turn), not words.

pipecat's prebuilt UI (/client/) is only checked to be served: its WebRTC client gets the
microphone through Daily's call-machine bundle, fetched from a CDN, which CI cannot reach.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from browser import Chromium, find_chromium
from tools import unavailable
from voice_page import (
    BOT_AUDIO_ENERGY,
    ROOT,
    SENTENCE,
    bot_command,
    microphone_wav,
    running_bot,
    talk,
    turn_from_log,
)

from nemotron_speech.llm.launcher import free_port
from nemotron_speech.testing.sentences import SENTENCES

pytestmark = pytest.mark.slow
SCREENSHOT = ROOT / "docs" / "images" / "voice-bot.png"
MAGPIE_ASSETS = ROOT / "tests" / "assets" / "tts"
# after bot_command's `--tts espeak`: argparse keeps the last value of a flag
MAGPIE_OPTIONS = (
    "--tts", "magpie",
    "--magpie-model", str(MAGPIE_ASSETS / "tiny-magpie.nemo"),
    "--magpie-codec", str(MAGPIE_ASSETS / "tiny-codec.nemo"),
    "--tts-device", "cpu",
)  # fmt: skip


@contextmanager
def serving_bot(asr_server, vllm_server, log_path: Path, *options: str) -> Iterator[str]:
    """`python pipelines/voice_bot.py -t webrtc` on a free port; yields its base URL."""
    if find_chromium() is None:
        unavailable("chromium missing: run .ci/setup_browser.sh")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = bot_command(asr_server.url, vllm_server, "127.0.0.1", port, *options)
    with running_bot(command, url, log_path):
        yield url


@pytest.fixture
def bot(asr_server, vllm_server, tmp_path):
    """The espeak bot; yields (base URL, log path)."""
    log_path = tmp_path / "bot.log"
    with serving_bot(asr_server, vllm_server, log_path) as url:
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


def test_browser_talks_to_magpie_bot(asr_server, vllm_server, speech_wavs, tmp_path):
    """Silence adds no energy; the greeting and the answer of the test model came to ~5e-3."""
    sentence = SENTENCES[SENTENCE]
    mic = microphone_wav(speech_wavs[SENTENCE], tmp_path / "mic.wav")
    log_path = tmp_path / "bot.log"
    with (
        serving_bot(asr_server, vllm_server, log_path, *MAGPIE_OPTIONS) as url,
        Chromium(mic) as browser,
    ):
        talk(
            browser,
            f"{url}/voice/",
            sentence,
            log_path,
            tmp_path / "voice-bot-magpie.png",
            heard=BOT_AUDIO_ENERGY,
            answer_more_than=1e-4,
        )
        print("bot audio energy:", browser.evaluate(BOT_AUDIO_ENERGY))
    log = log_path.read_text()
    turn_from_log(log, sentence)
    assert "NemotronMagpieTTSService" in log, "the answer was not spoken by Magpie"
    assert "EspeakTTS" not in log
