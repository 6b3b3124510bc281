"""Elastic layers: one set of max-size weights; a call uses the leading slice it needs.

Every supernet weight is stored at its largest shape and every subnet uses the *leading*
slice `W[:out, :in]`. That rule is what lets a standalone subnet inherit its weights by
copying leading slices (`recnas.supernet.net.inherit_weights`). The one exception is the raw
fields' token projection with fewer tokens than fields, which folds its rows
(`TokenLinear(fold=True)`) and is inherited folded.
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
        if self.weight.numel():  # none with no inputs (a store without categorical fields): torch warns on an empty init
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def weight_for(self, out: int, active: int | torch.Tensor | None = None) -> torch.Tensor:
        """The [out, max_in] matrix of a call with `out` outputs: the leading slice (`active`,
        the live outputs, matters only to a folding `TokenLinear`)."""
        return self.weight[:out]

    def forward(self, x: torch.Tensor, out: int | None = None, active: torch.Tensor | None = None) -> torch.Tensor:
        out = self.max_out if out is None else out
        if x.shape[-1] > self.max_in or out > self.max_out:
            raise ValueError(f"{type(self).__name__}({self.max_in}->{self.max_out}) asked for {x.shape[-1]}->{out}")
        w = self.weight_for(out, active)[:, : x.shape[-1]]
        return F.linear(x, w, None if self.bias is None else self.bias[:out])


class TokenLinear(ElasticLinear):
    """Linear map along the token/field axis of [B, T, E] (the EFC operator's core).

    With `fold`, a call with fewer output tokens than inputs folds the rows beyond them back
    onto the first ones (row r -> r mod t, rows below max(t, max_in) only): the supernet's
    projection of the raw fields, whose rows start unmixed (`unmixed_`), then gives a
    16-token path every field folded, as a standalone 16-token block starts, instead of the
    leading slice that dropped fields 16-25. A standalone block (max_out = t) is unchanged by
    it; `inherit_from` copies the folded matrix into one."""

    def __init__(self, max_in: int, max_out: int, bias: bool = True, fold: bool = False):
        super().__init__(max_in, max_out, bias)
        self.fold = fold

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

    def weight_for(self, out: int, active: int | torch.Tensor | None = None) -> torch.Tensor:
        """The [out, max_in] matrix of a call with `out` output tokens, `active` of them live
        (a 0-dim tensor on the masked path, where out = max_out; default `out`)."""
        active = out if active is None else active
        if not self.fold or (isinstance(active, int) and active >= min(self.max_in, self.max_out)):
            return self.weight[:out]  # nothing to fold: the leading slice
        rows = torch.arange(self.max_out, device=self.weight.device)
        limit = torch.clamp(torch.as_tensor(active, device=rows.device), min=self.max_in)
        fold = (rows[None, :] < limit) & (rows[None, :] % active == rows[:out, None])
        return fold.to(self.weight.dtype) @ self.weight

    @torch.no_grad()
    def inherit_from(self, source: "TokenLinear") -> None:
        """This (standalone) projection's weights from a supernet's: its folded leading slice."""
        if source.max_in < self.max_in or source.max_out < self.max_out or (self.bias is None) != (source.bias is None):
            raise ValueError(f"TokenLinear({source.max_in}->{source.max_out}) cannot hold TokenLinear({self.max_in}->{self.max_out})")
        self.weight.copy_(source.weight_for(self.max_out)[:, : self.max_in])
        if self.bias is not None:
            self.bias.copy_(source.bias[: self.max_out])

    def forward(self, x: torch.Tensor, out: int | None = None, active: torch.Tensor | None = None) -> torch.Tensor:  # x: [B, T, E]
        y = super().forward(x.transpose(1, 2), out, active)  # [B, E, out]
        return y.transpose(1, 2)
