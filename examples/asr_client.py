"""Stream a WAV file to the ASR server and print what comes back.

    python examples/asr_client.py tests/assets/asr/speech/00.wav --realtime

Prints the interims as they arrive, the final transcript, the interim count, the real-time factor
(wall time from first audio to final / audio duration) and two finalization latencies: last audio
sent -> final, and end signal sent -> final. Needs only `nemotron_speech.client` (no torch).
The WAV must be 16 kHz mono PCM16, the server's input format.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import wave

from nemotron_speech.client import AsrClient, AsrConnectionError
from nemotron_speech.protocol import SAMPLE_RATE, SAMPLE_WIDTH, Error, Transcript


def read_pcm16(path: str) -> bytes:
    """Frames of a 16 kHz mono PCM16 WAV, or exit with what is wrong with it."""
    with wave.open(path, "rb") as wav:
        shape = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
        if shape != (SAMPLE_RATE, 1, SAMPLE_WIDTH):
            sys.exit(
                f"{path}: {shape[0]} Hz, {shape[1]} channel(s), {8 * shape[2]}-bit; the "
                f"server needs {SAMPLE_RATE} Hz mono 16-bit (e.g. `sox in.wav -r 16000 -c 1 "
                "-b 16 out.wav`)"
            )
        return wav.readframes(wav.getnframes())


async def stream(args: argparse.Namespace) -> None:
    audio = read_pcm16(args.audio)
    step = int(SAMPLE_RATE * args.chunk_ms / 1000) * SAMPLE_WIDTH
    try:
        client = await AsrClient.connect(args.url, token=args.token)
    except AsrConnectionError as exc:
        sys.exit(str(exc))
    interims = 0

    async def receive() -> Transcript:
        nonlocal interims
        async for event in client:
            if isinstance(event, Error):
                print(f"server error: {event.message}", file=sys.stderr)
            elif event.is_final and event.finalize:
                return event
            elif not event.is_final:
                interims += 1
                print(f"  interim: {event.text}")
        sys.exit(f"connection closed: {client.close_code} {client.close_reason}")

    async with client:
        receiver = asyncio.create_task(receive())
        started = time.perf_counter()
        for index, offset in enumerate(range(0, len(audio), step)):
            if args.realtime:  # pace by the clock, not by sleeps, so drift cannot accumulate
                await asyncio.sleep(
                    max(0.0, started + index * args.chunk_ms / 1000 - time.perf_counter())
                )
            await client.send_audio(audio[offset : offset + step])
        last_audio = time.perf_counter()
        await client.end()
        end_sent = time.perf_counter()
        final = await receiver
        done = time.perf_counter()

    duration = len(audio) / (SAMPLE_RATE * SAMPLE_WIDTH)
    print(f"final: {final.text}")
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
    asyncio.run(stream(parser.parse_args()))


if __name__ == "__main__":
    main()
