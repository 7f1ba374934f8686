"""LLM serving: the vLLM launch recipe for Nemotron-3-Nano and a small process manager for it.

`recipe.build_command` is the single source of the vLLM flags (CLI, Docker compose, docs and tests
are checked against it); `launcher.start_server` runs one and waits for `/health`. Nothing here
imports vLLM: it runs as a separate process, often from a separate environment or container.
"""

from nemotron_speech.llm.launcher import RunningServer, ServerStartError, start_server
from nemotron_speech.llm.recipe import TARGETS, LaunchSpec, build_command

__all__ = [
    "TARGETS",
    "LaunchSpec",
    "RunningServer",
    "ServerStartError",
    "build_command",
    "start_server",
]
