# /// script
# requires-python = ">=3.11"
# dependencies = ["websockets>=13"]
# ///
"""Stream a WAV file to the ASR server and print what comes back.

    uv run examples/asr_client.py AUDIO.wav --realtime

A standalone script: `uv run` reads the metadata block above and runs it with only `websockets`,
from any directory, without this project installed (any Python 3.11+ with `websockets` runs it
too). It speaks the wire protocol of docs/protocol.md itself, so it is also a small reference
client. Prints the interims as they arrive, each with its lag (from the send of the audio its
text needed, which the server states as `audio_ms`, protocol version 3), the final transcript,
the interim count, the real-time factor (wall time from first audio to final / audio duration)
and two finalization latencies: last audio sent -> final, and end signal sent -> final. The WAV
must be 16 kHz mono PCM16, the server's input format. Sent unpaced (no --realtime), the audio
goes as fast as the server reads it: a server that falls behind stops reading (TCP
backpressure), so a long file simply takes as long as the server needs.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import sys
import time
import wave

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2  # bytes per PCM16 sample


class ClientError(Exception):
    """An expected failure (bad file, no server, closed stream): printed as one line."""


def read_pcm16(path: str) -> bytes:
    """Frames of a 16 kHz mono PCM16 WAV, or a ClientError saying what is wrong with it."""
    try:
        with wave.open(path, "rb") as wav:
            shape = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
            frames = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ClientError(f"{path}: not a readable WAV file ({exc})") from None
    if shape != (SAMPLE_RATE, 1, SAMPLE_WIDTH):
        raise ClientError(
            f"{path}: {shape[0]} Hz, {shape[1]} channel(s), {8 * shape[2]}-bit; the server "
            f"needs {SAMPLE_RATE} Hz mono 16-bit (e.g. `sox in.wav -r 16000 -c 1 -b 16 out.wav`)"
        )
    return frames


async def open_stream(url: str, token: str | None) -> ClientConnection:
    """Connect and wait for the server's `ready` message."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        websocket = await connect(
            url, additional_headers=headers, open_timeout=10, compression=None
        )  # PCM barely compresses; deflate would only cost CPU
    except InvalidStatus as exc:
        body = exc.response.body.decode(errors="replace").strip()
        raise ClientError(
            f"{url} refused the connection: HTTP {exc.response.status_code} {body}"
        ) from None
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise ClientError(
            f"cannot connect to {url} ({exc}); start the server (`nemotron-speech serve-asr "
            "--model M.nemo`) or pass --url ws://HOST:PORT"
        ) from None
    try:
        ready = json.loads(await websocket.recv())
    except ConnectionClosed:
        raise ClientError(closed(websocket, "before it was ready")) from None
    if ready.get("type") != "ready":
        await websocket.close()
        raise ClientError(f"{url} is not an ASR server: its first message was {ready}")
    return websocket


def closed(websocket: ClientConnection, when: str = "") -> str:
    """Why the server closed the stream, with its close code (docs/protocol.md lists them)."""
    when = f" {when}" if when else ""
    code, reason = websocket.close_code, websocket.close_reason or ""
    return f"the server closed the connection{when}: {code} {reason}".rstrip()


class Sends:
    """When each frame was sent, by the audio sent once it was (bytes): an interim's lag runs
    from the send of the frame that completed its `audio_ms`."""

    def __init__(self) -> None:
        self.ends: list[int] = []
        self.times: list[float] = []

    def add(self, size: int) -> None:
        self.ends.append((self.ends[-1] if self.ends else 0) + size)
        self.times.append(time.perf_counter())

    def lag_ms(self, audio_ms: float) -> float | None:
        index = bisect.bisect_left(self.ends, audio_ms * SAMPLE_RATE * SAMPLE_WIDTH / 1000)
        if index == len(self.times):
            return None  # not sent yet: a server that is not this protocol's
        return 1000 * (time.perf_counter() - self.times[index])


async def receive(websocket: ClientConnection, sends: Sends) -> tuple[str, int]:
    """Print interims (with their lag, where the server says which audio they needed) and
    errors until the final that answers `end`; return its text and the interim count."""
    interims = 0
    try:
        async for message in websocket:
            event = json.loads(message)
            if event.get("type") == "error":
                print(f"server error: {event.get('message')}", file=sys.stderr)
            elif event.get("type") != "transcript":
                continue
            elif not event.get("is_final"):
                interims += 1
                needed = event.get("audio_ms")  # protocol version 3; absent after `end`
                lag = None if needed is None else sends.lag_ms(needed)
                print(f"  interim: {event['text']}" + ("" if lag is None else f" ({lag:.0f} ms)"))
            elif event.get("finalize"):  # the final that answers `end` (a reset)
                return event["text"], interims
    except ConnectionClosed:  # closed with an error code; a normal close just ends the loop
        pass
    raise ClientError(closed(websocket))


async def stream(args: argparse.Namespace) -> None:
    audio = read_pcm16(args.audio)
    step = int(SAMPLE_RATE * args.chunk_ms / 1000) * SAMPLE_WIDTH
    async with await open_stream(args.url, args.token) as websocket:
        sends = Sends()
        receiver = asyncio.create_task(receive(websocket, sends))
        started = time.perf_counter()
        try:
            for index, offset in enumerate(range(0, len(audio), step)):
                if args.realtime:  # pace by the clock, not by sleeps, so drift cannot accumulate
                    await asyncio.sleep(
                        max(0.0, started + index * args.chunk_ms / 1000 - time.perf_counter())
                    )
                sends.add(len(audio[offset : offset + step]))  # before the send may yield
                await websocket.send(audio[offset : offset + step])
            last_audio = time.perf_counter()
            await websocket.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await receiver  # it may have seen the close first: one message is enough
            raise ClientError(closed(websocket, "while audio was being sent")) from None
        end_sent = time.perf_counter()
        text, interims = await receiver
        done = time.perf_counter()

    duration = len(audio) / (SAMPLE_RATE * SAMPLE_WIDTH)
    print(f"final: {text}")
    print(f"interims: {interims}")
    print(
        f"audio: {duration:.2f} s, RTF {(done - started) / duration:.3f}"
        f"{' (real-time paced)' if args.realtime else ''}"
    )
    print(
        f"finalization: last audio -> final {1000 * (done - last_audio):.1f} ms, "
        f"end -> final {1000 * (done - end_sent):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", help="16 kHz mono PCM16 WAV")
    parser.add_argument("--url", default="ws://127.0.0.1:8080")
    parser.add_argument("--token", default=None, help="bearer token, if the server wants one")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="audio per frame")
    parser.add_argument("--realtime", action="store_true", help="send at the speed of speech")
    try:
        asyncio.run(stream(parser.parse_args()))
    except ClientError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
