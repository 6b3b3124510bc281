"""LayerNorm over short rows (the 16-wide embedding axis), fast on large GPU batches.

PyTorch's fused LayerNorm kernel gives every row its own thread block, which starves on
millions of 16-wide rows: on an H100, [65,536 x 64 tokens x 16] fp32 takes 9.8 ms forward +
backward, 27 ms of a 89 ms full-space supernet step at batch 65,536 (docs/benchmarks.md).
Written as a few whole-tensor reductions and elementwise kernels, with the backward in closed
form, it takes 4.7 ms. Below `min_elements` (and on the CPU) the fused kernel is kept: there
one kernel instead of ~15 matters more, because small steps are bound by kernel launches.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class _RowLayerNorm(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the last axis, in fp32 (as autocast runs LayerNorm)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        var, mean = torch.var_mean(x, -1, keepdim=True, correction=0)
        rstd = torch.rsqrt(var + eps)
        xhat = (x - mean) * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        return torch.addcmul(bias, xhat, weight)

    @staticmethod
    def backward(ctx, dy):
        xhat, rstd, weight = ctx.saved_tensors
        g = dy * weight
        dx = (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True)) * rstd
        rows = tuple(range(dy.dim() - 1))
        return dx, (dy * xhat).sum(rows), dy.sum(rows), None


class RowLayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` (same parameters, same state dict) that switches to `_RowLayerNorm` for
    CUDA inputs of at least `min_elements` values (`min_elements=0`: for every input, also on
    the CPU, which is how the tests compare both paths). Output dtype as `nn.LayerNorm`'s: fp32
    under autocast, else the input's."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, min_elements: int = 1 << 24):
        super().__init__(normalized_shape, eps=eps)
        self.min_elements = min_elements

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() < self.min_elements or not (x.is_cuda or self.min_elements == 0):
            return super().forward(x)
        autocast = torch.is_autocast_enabled(x.device.type)
        with torch.autocast(x.device.type, enabled=False):
            y = _RowLayerNorm.apply(x.float(), self.weight.float(), self.bias.float(), self.eps)
        return y if autocast else y.to(x.dtype)
