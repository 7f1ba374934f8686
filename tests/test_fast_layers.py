"""The streaming versions of attention and convolution compute NeMo's function, and an engine on
them emits the same tokens as NeMo's whole-utterance decoding."""

from __future__ import annotations

import pytest
import torch

from nemotron_speech.asr import AsrEngine
from nemotron_speech.asr.audio import load_audio
from nemotron_speech.asr.fast_layers import (
    StreamingConformerConvolution,
    StreamingRelPositionAttention,
    use_fast_layers,
)
from nemotron_speech.asr.model import load_nemo_model, select_right_context

RIGHT_CONTEXTS = (0, 1, 6, 13)


@pytest.fixture(scope="module")
def model(asr_model_path):
    return load_nemo_model(asr_model_path)


def encoder_step(encoder, geometry, inputs):
    signal, lengths, channel, time_cache, channel_len = inputs
    with torch.inference_mode():
        return encoder.cache_aware_stream_step(
            processed_signal=signal,
            processed_signal_length=lengths,
            cache_last_channel=channel.clone(),
            cache_last_time=time_cache.clone(),
            cache_last_channel_len=channel_len.clone(),
            keep_all_outputs=False,
            drop_extra_pre_encoded=geometry.drop_extra_pre_encoded,
        )


@pytest.mark.parametrize("right_context", RIGHT_CONTEXTS, ids=lambda r: f"R{r}")
def test_streaming_step_matches_nemo_modules(model, right_context):
    """Full, partly filled and empty attention caches, and padded chunks, in one batch."""
    encoder = model.encoder
    geometry = select_right_context(model, right_context)
    generator = torch.Generator().manual_seed(right_context)
    frames = geometry.pre_encode_cache + geometry.chunk
    signal = torch.randn(4, encoder._feat_in, frames, generator=generator)
    lengths = torch.tensor([frames, frames - 3, frames, frames - 1])
    channel, time_cache, channel_len = encoder.get_initial_cache_state(batch_size=4)
    channel.copy_(torch.randn(channel.shape, generator=generator))
    time_cache.copy_(torch.randn(time_cache.shape, generator=generator))
    channel_len.copy_(torch.tensor([channel.shape[2], 5, 0, channel.shape[2]]))
    inputs = (signal, lengths, channel, time_cache, channel_len)
    try:
        stock = encoder_step(encoder, geometry, inputs)
        assert use_fast_layers(encoder) == 2 * len(encoder.layers)
        fast = encoder_step(encoder, geometry, inputs)
    finally:
        use_fast_layers(encoder, enabled=False)
    names = ("encoded", "lengths", "channel", "time", "channel_len")
    for name, a, b in zip(names, stock, fast, strict=True):
        assert a.shape == b.shape, name
        torch.testing.assert_close(b, a, rtol=0, atol=2e-5, msg=name)


def test_swap_is_reversible_and_leaves_offline_decoding_alone(model, speech_wavs):
    samples = torch.from_numpy(load_audio(speech_wavs[0]))[None]
    length = torch.tensor([samples.shape[1]])

    def offline():
        with torch.inference_mode():
            features, feature_length = model.preprocessor(input_signal=samples, length=length)
            return model.encoder(audio_signal=features, length=feature_length)[0]

    reference = offline()
    use_fast_layers(model.encoder)
    try:
        kinds = {type(m) for m in model.encoder.modules()}
        assert {StreamingRelPositionAttention, StreamingConformerConvolution} <= kinds
        assert torch.equal(offline(), reference)  # no cache: NeMo's code runs unchanged
    finally:
        assert use_fast_layers(model.encoder, enabled=False) == 2 * len(model.encoder.layers)
    kinds = {type(m) for m in model.encoder.modules()}
    assert not {StreamingRelPositionAttention, StreamingConformerConvolution} & kinds


@pytest.mark.parametrize("right_context", RIGHT_CONTEXTS, ids=lambda r: f"R{r}")
def test_engine_on_fast_layers_equals_offline(asr_model_path, speech_wavs, right_context):
    engine = AsrEngine.load(asr_model_path, right_context=right_context, fast_layers=True)
    for wav in speech_wavs:
        samples = load_audio(wav)
        final = engine.transcribe(samples)
        offline_ids, _ = engine.transcribe_offline(samples)
        assert list(final.token_ids) == offline_ids
    assert isinstance(engine.model.encoder.layers[0].self_attn, StreamingRelPositionAttention)
    assert all(
        isinstance(layer.conv, StreamingConformerConvolution)
        for layer in engine.model.encoder.layers
    )
