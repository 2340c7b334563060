"""A plain BiLSTM-CTC training loop, the way a first implementation is usually written: fixed-size
batches of randomly ordered utterances padded to the longest, the recurrent stack run over the
padding (no packing), fp32. tools/bench_train.py runs it beside asr's own training step on the same
features and model dimensions, so "useful frames per second" compares like with like.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PlainBiLSTM(nn.Module):
    """Stacked frames -> n BiLSTM layers -> linear -> log-softmax, over padded batches."""

    def __init__(self, input_dim: int, stack: int, hidden: int, layers: int, vocab: int):
        super().__init__()
        self.stack = stack
        self.lstm = nn.LSTM(input_dim * stack, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden, vocab)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = features.shape
        pad = (-frames) % self.stack
        x = F.pad(features, (0, 0, 0, pad)).reshape(batch, (frames + pad) // self.stack, dim * self.stack)
        y, _ = self.lstm(x)
        return self.out(y).log_softmax(-1)


def plain_steps(
    model: PlainBiLSTM,
    optimizer: torch.optim.Optimizer,
    features: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    batch_size: int,
    seed: int,
    steps: int,
    device: torch.device = torch.device("cpu"),
) -> int:
    """Train ``steps`` steps on fixed-size batches of randomly ordered utterances (a new shuffle
    from ``seed`` whenever the data runs out); returns the useful (unpadded) frames trained on."""
    rng = random.Random(seed)
    order: list[int] = []
    useful = 0
    for _ in range(steps):
        if len(order) < batch_size:
            order = list(range(len(features)))
            rng.shuffle(order)
        chosen, order = order[:batch_size], order[batch_size:]
        lengths = torch.tensor([features[i].shape[0] for i in chosen])
        padded = nn.utils.rnn.pad_sequence([features[i] for i in chosen], batch_first=True).to(device)
        log_probs = model(padded)
        out_lengths = (lengths + model.stack - 1) // model.stack
        loss = F.ctc_loss(log_probs.transpose(0, 1), torch.cat([targets[i] for i in chosen]).to(device), out_lengths,
                          torch.tensor([len(targets[i]) for i in chosen]), zero_infinity=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        useful += int(lengths.sum())
    return useful
