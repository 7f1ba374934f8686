"""Test assets built by the project itself: a small cache-aware model and espeak-ng speech.

Nothing here is downloaded; see `make_model` for how the model is generated and trained.
"""
