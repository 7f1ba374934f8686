"""nemotron-speech: NVIDIA's open streaming ASR and Nemotron LLM as Pipecat services.

Importing this package is cheap: torch, NeMo and pipecat load only in the modules that need them.
"""

__version__ = "0.1.0"
