"""The bundled bot's example tool.

A direct function (pipecat reads its signature and docstring into the tool schema). Its schema and
canned answer match the fixture LLM's tool-call conversation (`testing.fixture_llm`), so the
tool round trip is tested against a real vLLM server; replace it with a real weather API.
"""

from __future__ import annotations

from pipecat.services.llm_service import FunctionCallParams

WEATHER = {"temperature_c": 22, "condition": "sunny"}


async def get_weather(params: FunctionCallParams, location: str) -> None:
    """Get the current weather for a city.

    Args:
        location: City name
    """
    await params.result_callback(WEATHER)
