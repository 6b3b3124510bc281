"""Training a model's embedding tables alone, after it has stopped ("table fine-tune").

Why: deep CTR models overfit through their dense layers on every new pass over the training
rows (the "one-epoch phenomenon", Zhang et al., CIKM 2022). On the 200k-row synthetic
benchmark the searched models peak after 3-4 epochs and lose 0.02-0.04 validation log loss
within two more, while their tables are still learning: trained on from the best weights with
everything else frozen, the tables alone gain 0.001-0.004 (`benchmarks/epoch_overfit.py`,
docs/benchmarks.md). So a model can stop early and then train its tables for a few more epochs.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from recnas.train.config import TrainConfig
from recnas.train.trainer import embedding_param_ids


class TableFinetune(BaseModel):
    """The tables-only phase: `epochs` more epochs at `lr_scale` times the recipe's learning
    rate(s), annealed to zero with a cosine, keeping the weights of the best epoch."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=1, description="epochs of the tables-only phase")
    lr_scale: float = Field(0.25, gt=0, le=1, description="its starting learning rate as a share of the recipe's (0.25: where a 6-epoch cosine is two epochs before its end)")


def table_phase_config(recipe: TrainConfig, phase: TableFinetune) -> TrainConfig:
    """`recipe` turned into the tables-only phase: same batch, optimizer, table decay and seed."""
    return recipe.model_copy(update={
        "lr": recipe.lr * phase.lr_scale,
        "embedding_lr": None if recipe.embedding_lr is None else recipe.embedding_lr * phase.lr_scale,
        "epochs": phase.epochs, "max_steps": None, "warmup_steps": 0, "lr_schedule": "cosine",
        "eval_every": None, "early_stopping_patience": None, "restore_best": True,
    })


def freeze_all_but_tables(model: nn.Module) -> int:
    """Make every parameter but the embedding tables' untrainable; returns the trainable count."""
    tables = embedding_param_ids(model)
    if not tables:
        raise ValueError(f"{type(model).__name__} has no embedding tables to train alone")
    for p in model.parameters():
        p.requires_grad_(id(p) in tables)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def weights_digest(model: nn.Module) -> str:
    """A short digest of a model's weights: names the tables-only phase that started from them,
    so a model retrained under another recipe never reuses a phase run on its old weights."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).contiguous().numpy().tobytes())
    return h.hexdigest()[:12]
