"""The streaming ASR WebSocket server: `python -m nemotron_speech.server --model M.nemo`.

`app` accepts connections and answers `/health` and `/metrics`; `session` serves one connection;
`inference` owns the engine on its own thread and batches every connection's audio into one
model step; `metrics` renders Prometheus text. The wire format lives in `nemotron_speech.protocol`.
"""

from nemotron_speech.server.app import AsrServer, ServerConfig

__all__ = ["AsrServer", "ServerConfig"]
