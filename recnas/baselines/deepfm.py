"""DeepFM (Guo et al. 2017): first-order + FM second-order + MLP, sharing one embedding."""

from __future__ import annotations

import torch

from recnas.baselines.base import Baseline, DeepHParams
from recnas.baselines.interactions import fm_interaction
from recnas.baselines.layers import MLP, FieldInputs, LinearTerm
from recnas.data.schema import DatasetMeta


class DeepFM(Baseline):
    """logit = linear(x) + FM(fields) + MLP(flattened fields); numeric features are fields too.

    `mlp=[]` leaves a plain factorisation machine.
    """

    name = "deepfm"
    Config = DeepHParams

    def __init__(self, meta: DatasetMeta, **hparams):
        super().__init__(meta, **hparams)
        c = self.cfg
        self.linear = LinearTerm(self.vocab_sizes, self.n_dense)
        self.fields = FieldInputs(self.vocab_sizes, self.n_dense, c.embed_dim)
        flat = self.fields.n_fields * c.embed_dim
        self.mlp = MLP(flat, c.mlp, out_dim=1, dropout=c.dropout, batch_norm=c.batch_norm) if c.mlp else None

    def logits(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.fields(dense, sparse)
        out = self.linear(dense, sparse) + fm_interaction(x)
        if self.mlp is not None:
            out = out + self.mlp(x.flatten(1)).squeeze(-1)
        return out
