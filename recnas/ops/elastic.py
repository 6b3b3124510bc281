"""Elastic layers: one set of max-size weights; a call uses the leading slice it needs.

Every supernet weight is stored at its largest shape and every subnet uses the *leading*
slice `W[:out, :in]`. That one rule is what lets a standalone subnet inherit its weights by
copying leading slices (see `recnas.supernet.inherit`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ElasticLinear(nn.Module):
    """`y = x W[:out, :in]^T (+ b[:out])` where `in` is the width of `x`."""

    def __init__(self, max_in: int, max_out: int, bias: bool = True):
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        self.weight = nn.Parameter(torch.empty(max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, out: int | None = None) -> torch.Tensor:
        out = self.max_out if out is None else out
        w = self.weight[:out, : x.shape[-1]]
        if x.shape[-1] > self.max_in or out > self.max_out:
            raise ValueError(f"ElasticLinear({self.max_in}->{self.max_out}) asked for {x.shape[-1]}->{out}")
        return F.linear(x, w, None if self.bias is None else self.bias[:out])


class TokenLinear(ElasticLinear):
    """Linear map along the token/field axis of [B, T, E] (the EFC operator's core)."""

    @torch.no_grad()
    def unmixed_(self) -> "TokenLinear":
        """Every input token goes whole into one output token, input j into output j mod max_out:
        [I; 0] where max_out >= max_in (the inputs unmixed), and with fewer outputs than inputs
        the inputs fold onto them in turn, so none is dropped and none is mixed at random. A
        random start here made a 16-token dot-product block over 26 fields train to 0.5029
        validation log loss, 0.4860 folded (200k rows; docs/benchmarks.md)."""
        self.weight.zero_()
        j = torch.arange(self.max_in)
        self.weight[j % self.max_out, j] = 1.0
        return self

    def forward(self, x: torch.Tensor, out: int | None = None) -> torch.Tensor:  # x: [B, T, E]
        y = super().forward(x.transpose(1, 2), out)  # [B, E, out]
        return y.transpose(1, 2)
