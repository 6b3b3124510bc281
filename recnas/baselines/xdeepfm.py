"""xDeepFM (Lian et al. 2018): linear + compressed interaction network + MLP."""

from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import PositiveInt, model_validator

from recnas.baselines.base import Baseline, DeepHParams
from recnas.baselines.interactions import CIN, check_cin_sizes
from recnas.baselines.layers import MLP, FieldInputs, LinearTerm
from recnas.data.schema import DatasetMeta


class XDeepFMConfig(DeepHParams):
    """xDeepFM's hyper-parameters: the CIN's layer sizes (`cin`) and whether each non-final
    layer sends half its maps on and pools the other half (`cin_split_half`, the paper's CIN)
    or forwards and pools every map (FuxiCTR's)."""

    cin: list[PositiveInt] = [200, 200, 200]
    cin_split_half: bool = True

    @model_validator(mode="after")
    def _even_split(self):
        try:
            check_cin_sizes(self.cin, self.cin_split_half)
        except ValueError as err:
            raise ValueError(f"cin {self.cin}: {err}") from None
        return self


class XDeepFM(Baseline):
    """logit = linear(x) + head(CIN(fields)) + MLP(flattened fields); `mlp=[]` drops the MLP."""

    name = "xdeepfm"
    Config = XDeepFMConfig

    def __init__(self, meta: DatasetMeta, **hparams):
        super().__init__(meta, **hparams)
        c = self.cfg
        self.linear = LinearTerm(self.vocab_sizes, self.n_dense)
        self.fields = FieldInputs(self.vocab_sizes, self.n_dense, c.embed_dim)
        self.cin = CIN(self.fields.n_fields, c.cin, c.cin_split_half)
        self.cin_head = nn.Linear(self.cin.out_dim, 1)
        flat = self.fields.n_fields * c.embed_dim
        self.mlp = MLP(flat, c.mlp, out_dim=1, dropout=c.dropout, batch_norm=c.batch_norm) if c.mlp else None

    def logits(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.fields(dense, sparse)
        out = self.linear(dense, sparse) + self.cin_head(self.cin(x)).squeeze(-1)
        if self.mlp is not None:
            out = out + self.mlp(x.flatten(1)).squeeze(-1)
        return out
