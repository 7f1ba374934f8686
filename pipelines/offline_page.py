"""Serve the bundled offline browser client (`web/index.html`) from pipecat's runner at /voice/.

pipecat's prebuilt UI (/client/) gets the microphone through Daily's device bundle, which it
loads from Daily's CDN even for SmallWebRTC; this page needs nothing from the internet.
"""

from pathlib import Path

from fastapi.responses import FileResponse
from pipecat.runner.run import app

PAGE = Path(__file__).parent / "web" / "index.html"


@app.get("/voice/", include_in_schema=False)
async def offline_page() -> FileResponse:
    """Plain WebRTC + RTVI client on the runner's /api/offer signalling."""
    return FileResponse(PAGE)
