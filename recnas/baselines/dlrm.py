"""DLRM (Naumov et al. 2019): bottom MLP on dense features, dot interaction, top MLP."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_validator

from recnas.baselines.base import Baseline, EmbedHParams
from recnas.baselines.interactions import pairwise_dot
from recnas.baselines.layers import MLP
from recnas.data.schema import DatasetMeta
from recnas.errors import ConfigError
from recnas.ops.embedding import FieldEmbedding


class DLRMConfig(EmbedHParams):
    """Defaults: the reference Criteo Kaggle run (dim 16, bottom 13-512-256-64-16, top 512-256-1).

    `top_mlp` lists hidden widths only; the final 1-wide output layer is always added.
    `dropout` / `batch_norm` apply to the top MLP (BARS uses them; the reference code does not).
    """

    bottom_mlp: list[PositiveInt] = [512, 256, 64, 16]
    top_mlp: list[PositiveInt] = [512, 256]
    interaction: Literal["dot", "cat"] = "dot"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False

    @model_validator(mode="after")
    def _bottom_matches_embedding(self):
        if not self.bottom_mlp or self.bottom_mlp[-1] != self.embed_dim:
            raise ValueError(
                f"bottom_mlp must end in embed_dim ({self.embed_dim}) so its output can interact "
                f"with the embeddings, got {self.bottom_mlp}"
            )
        return self


class DLRM(Baseline):
    """Dense features go through the bottom MLP (ReLU on every layer, as in the reference code)
    and become one more d-vector; "dot" feeds [bottom output, pairwise dots (no self-pairs)]
    to the top MLP, "cat" feeds all vectors concatenated. Without dense features only the
    embeddings interact.
    """

    name = "dlrm"
    Config = DLRMConfig

    def __init__(self, meta: DatasetMeta, **hparams):
        super().__init__(meta, **hparams)
        c = self.cfg
        self.embedding = FieldEmbedding(self.vocab_sizes, c.embed_dim)
        self.embedding.fan_uniform_()  # the reference DLRM code's init (see FieldEmbedding.fan_uniform_)
        self.bottom = MLP(self.n_dense, c.bottom_mlp) if self.n_dense > 0 else None
        n_vec = self.n_sparse + (self.bottom is not None)
        if c.interaction == "dot":
            top_in = n_vec * (n_vec - 1) // 2 + (c.embed_dim if self.bottom is not None else 0)
        else:
            top_in = n_vec * c.embed_dim
        if top_in == 0:
            raise ConfigError("dlrm: the dot interaction needs at least two feature vectors (this dataset has one categorical field and no dense features); use interaction='cat'")
        self.top = MLP(top_in, c.top_mlp, out_dim=1, dropout=c.dropout, batch_norm=c.batch_norm)

    def logits(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        vectors = self.embedding(sparse)
        z = None
        if self.bottom is not None:
            z = self.bottom(dense)
            vectors = torch.cat([z.unsqueeze(1), vectors], dim=1)
        if self.cfg.interaction == "cat":
            top_in = vectors.flatten(1)
        else:
            pairs = pairwise_dot(vectors)
            top_in = pairs if z is None else torch.cat([z, pairs], dim=1)
        return self.top(top_in).squeeze(-1)
