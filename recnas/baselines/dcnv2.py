"""DCN-V2 (Wang et al. 2021): full-rank cross network with an MLP, stacked or in parallel."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import PositiveInt

from recnas.baselines.base import Baseline, DeepHParams
from recnas.baselines.interactions import CrossNetV2
from recnas.baselines.layers import MLP, FieldInputs
from recnas.data.schema import DatasetMeta


class DCNv2Config(DeepHParams):
    """DCN-V2's hyper-parameters: `cross_layers` cross layers, full-rank or of rank `low_rank`,
    beside the MLP (`parallel`) or before it (`stacked`)."""

    cross_layers: PositiveInt = 3
    low_rank: PositiveInt | None = None
    structure: Literal["parallel", "stacked"] = "parallel"


class DCNv2(Baseline):
    """stacked: MLP(cross(x)); parallel: [cross(x), MLP(x)]; then a linear head.

    `mlp=[]` gives the cross-network-only model in either structure.
    """

    name = "dcnv2"
    Config = DCNv2Config

    def __init__(self, meta: DatasetMeta, **hparams):
        super().__init__(meta, **hparams)
        c = self.cfg
        self.fields = FieldInputs(self.vocab_sizes, self.n_dense, c.embed_dim)
        flat = self.fields.n_fields * c.embed_dim
        self.cross = CrossNetV2(flat, c.cross_layers, c.low_rank)
        self.mlp = MLP(flat, c.mlp, dropout=c.dropout, batch_norm=c.batch_norm) if c.mlp else None
        head_in = flat
        if self.mlp is not None:
            head_in = self.mlp.out_dim + (flat if c.structure == "parallel" else 0)
        self.head = nn.Linear(head_in, 1)

    def logits(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.fields(dense, sparse).flatten(1)
        h = self.cross(x)
        if self.mlp is not None:
            h = self.mlp(h) if self.cfg.structure == "stacked" else torch.cat([h, self.mlp(x)], dim=1)
        return self.head(h).squeeze(-1)
