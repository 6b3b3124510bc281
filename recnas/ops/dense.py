"""Dense operators of a choice block: map the block's combined dense input h [B, d] to [B, d]."""

from __future__ import annotations

import torch
import torch.nn as nn

from recnas.ops.elastic import ElasticLinear


class FC(nn.Module):
    """relu(W h + b)."""

    def __init__(self, max_dim: int):
        super().__init__()
        self.linear = ElasticLinear(max_dim, max_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(h, h.shape[-1]))


class Gating(nn.Module):
    """Sigmoid gating h * sigmoid(W h + b): a multiplicative (second-order) dense interaction."""

    def __init__(self, max_dim: int):
        super().__init__()
        self.gate = ElasticLinear(max_dim, max_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * torch.sigmoid(self.gate(h, h.shape[-1]))


class Cross(nn.Module):
    """DCN-v2's cross layer h * (W h + b) + h (Wang et al. 2021), with the block's input as x0.

    Not one of NASRec's operators (spaces list it explicitly). Why: unlike gating, the product
    is not squashed, so it builds exact polynomial feature crosses; DCN-v2 and xDeepFM, which
    cross explicitly, beat NASRec-space searches on the 1M-row synthetic benchmark once every
    model is trained to convergence. A block's input comes from earlier blocks rather than from
    a fixed x0, so stacked cross blocks double the degree per block, and hand-built stacks of
    them train badly (both in docs/benchmarks.md).
    """

    def __init__(self, max_dim: int):
        super().__init__()
        self.linear = ElasticLinear(max_dim, max_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.linear(h, h.shape[-1]) + h


class Sum(nn.Module):
    """The element-wise sum of the projected inputs itself (no extra weights)."""

    def __init__(self, max_dim: int):
        super().__init__()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h


DENSE_OPERATORS: dict[str, type[nn.Module]] = {"fc": FC, "gating": Gating, "sum": Sum, "cross": Cross}
