"""Greedy RNNT decoding of many streams with their decoder state in slot tensors.

NeMo's `rnnt_decoder_predictions_tensor` with partial hypotheses builds, merges, splits and
detokenizes one `Hypothesis` per stream on every step (device syncs and Python per stream). This
runs the same label-looping computer on a batched state gathered from slots, and returns each
stream's new token ids with two host transfers per step; the tokens are identical.
"""

from __future__ import annotations

import torch

from nemotron_speech.asr.slots import SlotStore

DECODER_STATE = ("lstm_hidden", "lstm_cell", "predictor_output", "last_label", "decoded_length")


class SlotGreedyDecoder:
    """Label-looping greedy decoding whose per-stream state lives in a `SlotStore`."""

    def __init__(self, model, store: SlotStore):
        from nemo.collections.asr.parts.submodules.transducer_decoding.label_looping_base import (
            BatchedLabelLoopingState,
        )

        self._state_type = BatchedLabelLoopingState
        self._decoding = model.decoding
        self._computer = model.decoding.decoding.decoding_computer
        device = next(model.parameters()).device
        # NeMo 3.0's own initial state for an empty hypothesis (<SOS> fed to the predictor)
        fresh = self._computer._get_batched_decoding_state_after_sos(device=device, batch_size=1)
        hidden, cell = fresh.predictor_states
        values = (hidden, cell, fresh.predictor_outputs, fresh.labels, fresh.decoded_lengths)
        for name, value, dim in zip(DECODER_STATE, values, (1, 1, 0, 0, 0), strict=True):
            store.add(name, value, dim)
        self._store = store

    @torch.inference_mode()
    def __call__(
        self, encoded: torch.Tensor, encoded_len: torch.Tensor, slots: torch.Tensor
    ) -> list[list[int]]:
        """Decode `encoded` [B, d_model, T] for the streams in `slots`; return new token ids."""
        hidden, cell, output, label, length = self._store.gather(DECODER_STATE, slots)
        state = self._state_type(
            predictor_states=(hidden, cell),
            predictor_outputs=output,
            labels=label,
            decoded_lengths=length,
        )
        hyps, state = self._computer(
            x=encoded.transpose(1, 2), out_len=encoded_len, prev_batched_state=state
        )
        # NeMo's CUDA-graph decoding returns its captured batch, padded past ours: keep our rows
        batch = len(slots)
        hidden, cell = state.predictor_states
        self._store.scatter(
            DECODER_STATE,
            slots,
            (
                hidden[:, :batch],
                cell[:, :batch],
                state.predictor_outputs[:batch],
                state.labels[:batch],
                state.decoded_lengths[:batch],
            ),
        )
        counts = hyps.current_lengths[:batch].tolist()
        labels = hyps.transcript[:batch, : max(counts, default=0)].tolist()
        return [row[:count] for row, count in zip(labels, counts, strict=True)]

    def forget_graphs(self) -> None:
        """Drop NeMo's CUDA-graph decoding state, if any; the next call captures it again. Called
        after each of the engine's own captures, after which its graphs failed (see `graphs`)."""
        self._computer.reset_cuda_graphs_state()

    def text(self, token_ids: list[int]) -> str:
        """Text of a stream's tokens, exactly as NeMo's decoding renders a hypothesis."""
        return self._decoding.decode_tokens_to_str_with_strip_punctuation(token_ids).strip()
