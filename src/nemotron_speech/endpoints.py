"""Where the servers listen by default, and the name vLLM serves the model under.

The one home of these defaults: the ASR server, the vLLM recipe, the Pipecat services, the bundled
pipelines and `nemotron-speech doctor` import them, so a client's default always reaches the
server's default. `docker/compose.yaml` publishes the same ports (a test checks it).
"""

ASR_PORT = 8080
ASR_URL = f"ws://localhost:{ASR_PORT}"
LLM_PORT = 8000
LLM_URL = f"http://localhost:{LLM_PORT}/v1"
LLM_MODEL = "nemotron-3-nano"  # vLLM's --served-model-name; clients ask for it by this name
