"""Input and MLP building blocks shared by every baseline.

Each model composes these instead of re-implementing them, so a fix (e.g. to how numeric
features are embedded) reaches all baselines at once.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from recnas.ops.embedding import FieldEmbedding


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden width, then an optional linear head.

    `hidden=[]` and `out_dim=None` is the identity, so "no MLP" needs no special case in callers.
    `out_dim` is then the width of what `forward` returns.
    """

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int | None = None, dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NumericEmbedding(nn.Module):
    """Numeric feature j -> value_j * v_j (FuxiCTR style), so each one becomes one more field."""

    def __init__(self, n_dense: int, dim: int, init_std: float = 0.01):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_dense, dim) * init_std)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.unsqueeze(-1) * self.weight


class FieldInputs(nn.Module):
    """All features as one field tensor [B, n_sparse + n_dense, dim] (categorical fields first).

    With `n_dense == 0` (Avazu, KDD12) there is no numeric part and no parameters for it.
    """

    def __init__(self, vocab_sizes: list[int], n_dense: int, dim: int):
        super().__init__()
        self.sparse = FieldEmbedding(vocab_sizes, dim)
        self.dense = NumericEmbedding(n_dense, dim) if n_dense > 0 else None
        self.n_fields = len(vocab_sizes) + n_dense
        self.dim = dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        emb = self.sparse(sparse)
        if self.dense is None:
            return emb
        return torch.cat([emb, self.dense(dense)], dim=1)


class LinearTerm(nn.Module):
    """First-order term: a learned weight per categorical id plus a linear map of dense features.

    This is logistic regression's whole model and the "wide"/first-order part of DeepFM and
    xDeepFM. Ids use a 1-wide `FieldEmbedding` (one fused table). Output: [B].
    """

    def __init__(self, vocab_sizes: list[int], n_dense: int):
        super().__init__()
        self.ids = FieldEmbedding(vocab_sizes, 1)
        self.dense = nn.Linear(n_dense, 1, bias=False) if n_dense > 0 else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        out = self.ids(sparse).sum(dim=(1, 2)) + self.bias
        if self.dense is not None:
            out = out + self.dense(dense).squeeze(-1)
        return out
