"""Accuracy on the user's own data: `nemotron-speech eval` (see docs/accuracy.md).

`metrics`, `dataset`, `report` and `server_run` need no torch; `engine_run` runs the engine.
"""
