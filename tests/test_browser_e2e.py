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
import signal
import subprocess
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
def serving_bot(
    asr_server, vllm_server, log_path: Path, *options: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python pipelines/voice_bot.py -t webrtc` on a free port; yields its base URL and
    process."""
    if find_chromium() is None:
        unavailable("chromium missing: run .ci/setup_browser.sh")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = bot_command(asr_server.url, vllm_server, "127.0.0.1", port, *options)
    with running_bot(command, url, log_path) as process:
        yield url, process


def assert_ends_its_session_and_exits(
    process: subprocess.Popen, sig: int, code: int, log_path: Path
) -> None:
    """`sig` to the bot after a session: it cancels the session and exits with `code`.

    Before the bot cancelled its sessions on SIGINT or SIGTERM, uvicorn waited for a session
    until its browser left, or until aiortc gave up on a gone one (20-60 s), and a second Ctrl-C
    hung for good.
    """
    process.send_signal(sig)
    try:  # 0.5-2 s here; the bound leaves a busy 2-core box room and is under aiortc's 20 s
        assert process.wait(timeout=15) == code, log_path.read_text()[-3000:]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the bot still runs 15 s after {sig!r}:\n{log_path.read_text()[-3000:]}")
    log = log_path.read_text()
    assert "reason: server shutting down" in log  # the session was cancelled, not timed out
    assert "Finished server process" in log and "Traceback" not in log, log[-3000:]


@pytest.fixture
def bot(asr_server, vllm_server, tmp_path):
    """The espeak bot; yields (base URL, log path, process)."""
    log_path = tmp_path / "bot.log"
    with serving_bot(asr_server, vllm_server, log_path) as (url, process):
        yield url, log_path, process


def test_browser_talks_to_bot(bot, speech_wavs, tmp_path):
    """The round trip; then Ctrl-C ends the bot although the browser left without a word."""
    url, log_path, process = bot
    sentence = SENTENCES[SENTENCE]
    mic = microphone_wav(speech_wavs[SENTENCE], tmp_path / "mic.wav")
    with urllib.request.urlopen(f"{url}/client/", timeout=10) as prebuilt:
        assert b"<title>Pipecat UI</title>" in prebuilt.read()
    with Chromium(mic) as browser:
        talk(browser, f"{url}/voice/", sentence, log_path, tmp_path / "voice-bot.png")

    turn = turn_from_log(log_path.read_text(), sentence)
    print("\n".join(turn.splitlines()[:10]))

    assert_ends_its_session_and_exits(process, signal.SIGINT, 0, log_path)
    if os.environ.get("NEMOTRON_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "voice-bot.png", SCREENSHOT)


def test_browser_talks_to_magpie_bot(asr_server, vllm_server, speech_wavs, tmp_path):
    """Silence adds no energy; the greeting and the answer of the test model came to ~5e-3.
    Then SIGTERM (`docker stop`) ends the bot while the browser is still connected."""
    sentence = SENTENCES[SENTENCE]
    mic = microphone_wav(speech_wavs[SENTENCE], tmp_path / "mic.wav")
    log_path = tmp_path / "bot.log"
    with (
        serving_bot(asr_server, vllm_server, log_path, *MAGPIE_OPTIONS) as (url, process),
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
        assert_ends_its_session_and_exits(process, signal.SIGTERM, -signal.SIGTERM, log_path)
    log = log_path.read_text()
    turn_from_log(log, sentence)
    assert "NemotronMagpieTTSService" in log, "the answer was not spoken by Magpie"
    assert "EspeakTTS" not in log
