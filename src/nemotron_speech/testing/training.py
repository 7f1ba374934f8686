"""Training the tiny test model: seeded rounds, a fast RNN-T loss for CPU, the exact-match count.

Split from `make_model` (which builds, records and checks the model) to keep both small.
"""

from __future__ import annotations

import random
import time

SEED = 0
# (steps, peak learning rate, max random leading silence in seconds); the last round makes the
# model tolerate speech that does not start at t=0
TRAINING_ROUNDS = ((400, 3e-3, 0.0), (500, 1.5e-3, 0.0), (800, 1e-3, 1.0))


def rnnt_loss(logits, targets, logit_lengths, target_lengths, blank: int):
    """RNN-T negative log-likelihood, vectorised over labels with logcumsumexp.

    NeMo's CPU loss (warprnnt_numba) takes seconds per batch and leaves numba threads that slow
    torch down afterwards; this one takes ~0.1 s for the tiny model.
    """
    import torch

    log_probs = logits.log_softmax(-1)
    batch, frames, labels_plus_one, _ = log_probs.shape
    blank_lp = log_probs[..., blank]
    tokens = targets[:, : labels_plus_one - 1].clamp(min=0)
    index = tokens[:, None, :, None].expand(batch, frames, labels_plus_one - 1, 1)
    label_lp = log_probs[:, :, :-1, :].gather(-1, index).squeeze(-1)
    emitted = torch.cat([torch.zeros(batch, frames, 1), torch.cumsum(label_lp, dim=-1)], dim=-1)
    alphas = [emitted[:, 0]]
    for t in range(1, frames):
        carried = alphas[-1] + blank_lp[:, t - 1]
        alphas.append(emitted[:, t] + torch.logcumsumexp(carried - emitted[:, t], dim=-1))
    alpha = torch.stack(alphas, dim=1)
    rows = torch.arange(batch)
    last = logit_lengths - 1
    return -(alpha[rows, last, target_lengths] + blank_lp[rows, last, target_lengths])


def train(model, audio, texts, stop_after: int | None = None, log=lambda line: None) -> None:
    """Train `model` through `TRAINING_ROUNDS`. `stop_after` ends every round after that many steps
    (its schedule still spans the whole round): a miniature of the build that runs every part of it
    (each round's settings, the leading-silence shift) in seconds."""
    started = time.perf_counter()
    for steps, lr, shift in TRAINING_ROUNDS:
        loss = train_round(model, audio, texts, steps, lr, shift, stop_after=stop_after)
        elapsed = time.perf_counter() - started
        log(f"trained {steps} steps at lr {lr}: loss {loss:.4f}, {elapsed:.0f} s")


def train_round(
    model,
    audio,
    texts,
    steps: int,
    lr: float,
    max_shift_s: float,
    batch: int = 8,
    stop_after: int | None = None,
) -> float:
    """One seeded AdamW + OneCycle run of `steps` steps over random batches of the utterances,
    ended after `stop_after` of them if given; returns the last step's loss."""
    import numpy as np
    import torch

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    targets = [torch.tensor(model.tokenizer.text_to_ids(text)) for text in texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.1
    )
    blank = model.joint.num_classes_with_blank - 1
    model.train()
    for _ in range(steps if stop_after is None else min(steps, stop_after)):
        picked = torch.randperm(len(audio), generator=generator)[:batch].tolist()
        clips = [audio[i] for i in picked]
        if max_shift_s > 0:
            clips = [
                torch.cat(
                    [
                        torch.zeros(
                            int(
                                torch.randint(
                                    0, int(max_shift_s * 16000) + 1, (1,), generator=generator
                                )
                            )
                        ),
                        clip,
                    ]
                )
                for clip in clips
            ]
        signal = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
        signal_len = torch.tensor([len(clip) for clip in clips])
        labels = torch.nn.utils.rnn.pad_sequence([targets[i] for i in picked], batch_first=True)
        label_len = torch.tensor([len(targets[i]) for i in picked])
        encoded, encoded_len = model.forward(input_signal=signal, input_signal_length=signal_len)
        decoded, _, _ = model.decoder(targets=labels, target_length=label_len)
        logits = model.joint(encoder_outputs=encoded, decoder_outputs=decoded)
        loss = (rnnt_loss(logits, labels, encoded_len, label_len, blank) / label_len).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return float(loss.detach())


def exact_matches(model, audio, texts) -> dict[str, int]:
    """Offline greedy transcripts equal to the sentence, per right context."""
    import torch

    counts = {}
    for context in model.encoder.att_context_size_all:
        model.encoder.set_default_att_context_size(context)
        hits = 0
        for signal, text in zip(audio, texts, strict=True):
            with torch.inference_mode():
                encoded, encoded_len = model.forward(
                    input_signal=signal[None], input_signal_length=torch.tensor([len(signal)])
                )
                hyp = model.decoding.rnnt_decoder_predictions_tensor(
                    encoded, encoded_len, return_hypotheses=True
                )[0]
            hits += int(hyp.text.strip() == text)
        counts[str(context[1])] = hits
    model.encoder.set_default_att_context_size(model.encoder.att_context_size_all[0])
    return counts
