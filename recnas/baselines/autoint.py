"""AutoInt (Song et al. 2019): stacked multi-head self-attention over fields; AutoInt+ adds an MLP."""

from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import PositiveInt

from recnas.baselines.base import Baseline, DeepHParams
from recnas.baselines.interactions import InteractingLayer
from recnas.baselines.layers import MLP, FieldInputs
from recnas.data.schema import DatasetMeta


class AutoIntConfig(DeepHParams):
    """Paper defaults: 3 layers, 2 heads of 32 dims, residual. `mlp=[]` is AutoInt;
    a non-empty `mlp` (BARS uses [400, 400, 400]) is AutoInt+, whose MLP logit is added.
    """

    mlp: list[PositiveInt] = []
    attention_layers: PositiveInt = 3
    heads: PositiveInt = 2
    attention_dim: PositiveInt = 32
    residual: bool = True


class AutoInt(Baseline):
    """AutoInt: the fields (numeric features too) through `attention_layers` multi-head
    self-attention layers, then a linear head; a non-empty `mlp` adds an MLP logit (AutoInt+)."""

    name = "autoint"
    Config = AutoIntConfig

    def __init__(self, meta: DatasetMeta, **hparams):
        super().__init__(meta, **hparams)
        c = self.cfg
        self.fields = FieldInputs(self.vocab_sizes, self.n_dense, c.embed_dim)
        width = c.heads * c.attention_dim
        self.attention = nn.Sequential(
            *(InteractingLayer(c.embed_dim if i == 0 else width, c.heads, c.attention_dim, c.residual) for i in range(c.attention_layers))
        )
        self.head = nn.Linear(self.fields.n_fields * width, 1)
        flat = self.fields.n_fields * c.embed_dim
        self.mlp = MLP(flat, c.mlp, out_dim=1, dropout=c.dropout, batch_norm=c.batch_norm) if c.mlp else None

    def logits(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.fields(dense, sparse)
        out = self.head(self.attention(x).flatten(1)).squeeze(-1)
        if self.mlp is not None:
            out = out + self.mlp(x.flatten(1)).squeeze(-1)
        return out
