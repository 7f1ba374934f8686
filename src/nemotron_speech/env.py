"""`.env` files, read the way pipecat's runner and examples read them.

pipecat's runner calls `load_dotenv(override=True)` when it is imported; the `nemotron-speech`
commands and the bundled pipelines do the same, from the working directory, so one `.env` (say
`NEMOTRON_ASR_URL=ws://spark:8080`, `ASR_AUTH_TOKEN=...`) configures everything the same way.
"""

from __future__ import annotations

from dotenv import find_dotenv, load_dotenv


def load_env() -> None:
    """Set the variables of the nearest `.env` at or above the working directory (none: no-op).

    Like pipecat's runner, the file wins over variables already set, so it never matters which of
    the two read it first."""
    load_dotenv(find_dotenv(usecwd=True), override=True)
