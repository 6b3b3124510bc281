"""Embedding-supernet training: a short loop of its own.

Why not the shared `Trainer`: adaptive sampling needs the loss of every step fed back to
the sampler together with the widths it drew, and the Trainer's sampler protocol
(`sample()` only) carries no feedback. The from-scratch retraining does use the Trainer.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from recnas.data.loader import BatchLoader
from recnas.embedding.model import EmbeddingSizeNet
from recnas.embedding.samplers import WidthSampler
from recnas.errors import TrainingDiverged
from recnas.train.trainer import diverged_weights_note


def train_supernet(model: EmbeddingSizeNet, loader: BatchLoader, sampler: WidthSampler, choices: tuple[int, ...], steps: int, lr: float, progress=None) -> list[float]:
    """Train `model` for `steps` batches, each with one per-field width draw; returns batch losses.

    `progress` is an optional callable(step, loss) (e.g. a rich progress bar update).
    """
    table = torch.as_tensor(choices)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch
    losses = []
    for step, batch in zip(range(steps), batches):
        pick = sampler.sample()
        loss = F.binary_cross_entropy_with_logits(model(batch.dense, batch.sparse, table[pick]), batch.label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(f"embedding supernet training diverged at step {step + 1} (loss {value}); lower supernet.lr")  # steps counted from 1, as the Trainer counts them
        sampler.update(np.asarray(pick), value)
        losses.append(value)
        if progress is not None:
            progress(step + 1, value)
    # the last update's too: NaN weights scored every configuration NaN, and the policy search
    # then failed in torch.multinomial with a traceback
    note = diverged_weights_note(model)
    if note is not None:
        raise TrainingDiverged(f"embedding supernet training diverged: {note} after step {steps}; lower supernet.lr")
    return losses
