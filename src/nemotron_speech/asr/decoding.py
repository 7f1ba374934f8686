"""Greedy RNNT decoding of many streams in lock-step, with their decoder state in slot tensors.

The greedy rule is NeMo's: at each encoder frame, ask the joint for a label; a blank (or the
`max_symbols`-th label of the frame) moves on to the next frame, any other label is emitted and
fed to the prediction network. NeMo's label-looping computer runs that rule in a loop whose
length depends on the labels, asking the GPU after every round whether any stream is still
searching: at batch 172 on an H200 the engine process spent 65 % of its time in that loop, most
of it waiting for those answers (`server_load --profile-seconds`, docs/server.md). Here every
stream takes the same `frames x max_symbols` rounds, each round a fixed set of tensor operations
on the whole batch with masks: no round needs a host answer, so a step's decode is captured in
the engine's CUDA graphs and replayed with its encoder (`graphs`), and the host reads the labels
once. The joint and the prediction network are NeMo's own modules, called as NeMo's computer
calls them, so the tokens are the same (tested against NeMo's offline decoding).
"""

from __future__ import annotations

import numpy as np
import torch

from nemotron_speech.asr.errors import ModelLoadError
from nemotron_speech.asr.slots import SlotStore

DECODER_STATE = ("lstm_hidden", "lstm_cell", "predictor_output")


class SlotGreedyDecoder:
    """Greedy RNNT decoding whose per-stream state lives in a `SlotStore`."""

    def __init__(self, model, store: SlotStore):
        computer = model.decoding.decoding.decoding_computer
        _check_supported(model, computer)
        self.max_symbols = int(computer.max_symbols)
        self.blank = int(model.decoder.blank_idx)
        self._decoding = model.decoding
        self._predictor = model.decoder
        self._joint = model.joint
        device = next(model.parameters()).device
        # NeMo 3.0's own initial state for an empty hypothesis (<SOS> fed to the predictor)
        fresh = computer._get_batched_decoding_state_after_sos(device=device, batch_size=1)
        hidden, cell = fresh.predictor_states
        for name, value, dim in zip(
            DECODER_STATE, (hidden, cell, fresh.predictor_outputs), (1, 1, 0), strict=True
        ):
            store.add(name, value, dim)
        self._store = store

    @torch.inference_mode()
    def __call__(
        self, encoded: torch.Tensor, encoded_len: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        """Decode `encoded` [B, d_model, T] (eagerly) for the streams in `slots`, updating their
        state; the labels [B, T * max_symbols] (`tokens` reads them)."""
        state = self._store.gather(DECODER_STATE, slots)
        labels = self.decode(encoded, encoded_len, state, stop_early=True)
        self._store.scatter(DECODER_STATE, slots, state)
        return labels

    def decode(
        self,
        encoded: torch.Tensor,
        encoded_len: torch.Tensor,
        state: list[torch.Tensor],
        stop_early: bool = False,
    ) -> torch.Tensor:
        """The lock-step greedy rounds over `encoded` [B, d_model, T], updating `state`
        (hidden, cell, predictor output) in place; column `t * max_symbols + s` of the result
        holds the `s`-th label emitted at frame `t`, or blank. `stop_early` ends a frame's rounds
        once no stream is searching: the same labels, but it asks the device (not in a graph)."""
        hidden, cell, output = state
        frames = self._joint.project_encoder(encoded.transpose(1, 2))  # [B, T, H]
        batch, count, _ = frames.shape
        labels = torch.full(
            (batch, count * self.max_symbols), self.blank, dtype=torch.long, device=frames.device
        )
        lstm, prediction = (hidden, cell), output  # only read: every round makes new tensors
        for t in range(count):
            frame = frames[:, t : t + 1]
            searching = encoded_len > t
            for s in range(self.max_symbols):
                logits = self._joint.joint_after_projection(frame, prediction)
                _, label = logits.squeeze(1).squeeze(1).max(-1)  # as NeMo: first maximum
                emitted = searching & (label != self.blank)
                labels[:, t * self.max_symbols + s] = torch.where(emitted, label, self.blank)
                lstm, prediction = self._predict(label, lstm, prediction, emitted)
                searching = emitted
                if stop_early and not searching.any():
                    break
        hidden.copy_(lstm[0])
        cell.copy_(lstm[1])
        output.copy_(prediction)
        return labels

    def _predict(
        self,
        label: torch.Tensor,
        lstm: tuple[torch.Tensor, torch.Tensor],
        prediction: torch.Tensor,
        emitted: torch.Tensor,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The prediction network fed `label`, kept only for the streams that `emitted` it."""
        batch = label.shape[0]
        new_output, new_lstm, *_ = self._predictor.predict(
            label.unsqueeze(1), lstm, add_sos=False, batch_size=batch
        )
        new_output = self._joint.project_prednet(new_output)
        keep = ~emitted
        self._predictor.batch_replace_states_mask(src_states=lstm, dst_states=new_lstm, mask=keep)
        return new_lstm, torch.where(emitted[:, None, None], new_output, prediction)

    def tokens(self, labels: torch.Tensor) -> list[list[int]]:
        """Each row's emitted token ids, in order (one device-to-host copy)."""
        rows = labels.cpu().numpy()
        emitted = rows != self.blank
        tokens: list[list[int]] = [[] for _ in range(len(rows))]
        for row in np.flatnonzero(emitted.any(axis=1)):
            tokens[row] = rows[row][emitted[row]].tolist()
        return tokens

    def text(self, token_ids: list[int]) -> str:
        """Text of a stream's tokens, exactly as NeMo's decoding renders a hypothesis."""
        return self._decoding.decode_tokens_to_str_with_strip_punctuation(token_ids).strip()


def _check_supported(model, computer) -> None:
    """Refuse decoding configurations this decode does not run, rather than ignore them: it
    applies NeMo's plain greedy rule only (NeMo's computer would fuse the others in)."""
    greedy = "the model's decoding config (decoding.greedy)"
    if getattr(model.decoding, "_is_tdt", False):
        raise ModelLoadError("TDT models are not supported: the engine decodes RNNT transducers")
    if computer.max_symbols is None:
        raise ModelLoadError(
            f"{greedy} sets no bound of labels per frame; streaming needs one (NeMo's default "
            "is 10): set max_symbols_per_step (or max_symbols)"
        )
    if computer.has_fusion_models() or getattr(computer, "per_stream_biasing_enabled", False):
        raise ModelLoadError(
            f"{greedy} fuses a language model or word boosting (ngram_lm_model, boosting_tree "
            "or per-stream biasing), which the streaming engine does not apply: set them to null"
        )
