"""Feature-interaction operators: the part in which the baselines actually differ.

All take field tensors [B, F, d] (or their flattening) so any model can combine them.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def pairwise_dot(x: torch.Tensor) -> torch.Tensor:
    """Dot products <x_i, x_j> for all field pairs i > j (strict lower triangle): [B, F(F-1)/2].

    DLRM's interaction; the pair order is fixed (row-major lower triangle) so a trained top
    MLP stays valid across runs.
    """
    n = x.shape[1]
    gram = torch.bmm(x, x.transpose(1, 2))
    rows, cols = torch.tril_indices(n, n, offset=-1, device=x.device)
    return gram[:, rows, cols]


def fm_interaction(x: torch.Tensor) -> torch.Tensor:
    """Sum of all pairwise dot products in O(F d): 0.5 * sum_d((sum_f x)^2 - sum_f x^2) -> [B].

    Equals `pairwise_dot(x).sum(1)` (tested) without materialising the F x F Gram matrix.
    """
    return 0.5 * (x.sum(1).pow(2) - x.pow(2).sum(1)).sum(1)


class CrossNetV2(nn.Module):
    """DCN-V2 cross network: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l on flat inputs [B, D].

    `low_rank=None` is the full-rank D x D matrix of the paper's default; an int r factorises
    W = U V^T (the paper's low-rank variant, without the mixture of experts).
    """

    def __init__(self, dim: int, n_layers: int, low_rank: int | None = None):
        super().__init__()

        def layer() -> nn.Module:
            if low_rank is None:
                return nn.Linear(dim, dim)
            return nn.Sequential(nn.Linear(dim, low_rank, bias=False), nn.Linear(low_rank, dim))

        self.layers = nn.ModuleList(layer() for _ in range(n_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w in self.layers:
            x = x0 * w(x) + x
        return x


class CIN(nn.Module):
    """xDeepFM's compressed interaction network on fields [B, F, d] -> pooled features [B, out_dim].

    Layer k: outer (Hadamard) products of its H_k maps with the F input fields, compressed by a
    1x1 convolution to H_{k+1} maps (linear, as in the paper's Eq. 6); every layer's maps are
    sum-pooled over d. With `split_half`, the paper's default, each non-final layer sends half
    its maps to the output and half to the next layer.
    """

    def __init__(self, n_fields: int, layer_sizes: list[int], split_half: bool = True):
        super().__init__()
        self.convs = nn.ModuleList()
        self.split = []
        prev, out_dim = n_fields, 0
        for k, size in enumerate(layer_sizes):
            self.convs.append(nn.Conv1d(prev * n_fields, size, kernel_size=1))
            half = size // 2 if split_half and k < len(layer_sizes) - 1 else 0
            self.split.append(half)
            prev = half if half else size
            out_dim += size - half
        self.out_dim = out_dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        h, pooled = x0, []
        for conv, half in zip(self.convs, self.split):
            z = self.layer(conv, h, x0)
            if half:
                h, out = z[:, :half], z[:, half:]
            else:
                h = out = z
            pooled.append(out.sum(-1))
        return torch.cat(pooled, dim=1)

    @staticmethod
    def layer(conv: nn.Conv1d, h: torch.Tensor, x0: torch.Tensor, way: str | None = None) -> torch.Tensor:
        """conv(outer products of h's maps with x0's fields) -> [B, O, d], computed one of three
        equal ways, by default the one with the smallest intermediate: the outer products
        [B, H*F, d] (the paper's), or W contracted with the fields first [B, O, H, d], or with the
        maps first [B, O, F, d]. With the `cpu` budget's CIN [16, 16] over 39 fields the outer
        products were most of xDeepFM's CPU time (docs/benchmarks.md). A conv with forward hooks
        (the PIM profiler's, quantisation's) takes the paper's way: only that calls the conv, so
        only then do the hooks see it as the crossbar layer it is."""
        o, n_h, n_f = conv.out_channels, h.shape[1], x0.shape[1]
        sizes = {"outer": n_h * n_f, "fields": o * n_h, "maps": o * n_f}
        hooked = bool(conv._forward_hooks or conv._forward_pre_hooks)
        way = way or ("outer" if hooked else min(sizes, key=sizes.get))
        if way == "outer":
            return conv(torch.einsum("bhd,bfd->bhfd", h, x0).flatten(1, 2))
        w = conv.weight.view(o, n_h, n_f)
        if way == "fields":
            z = (torch.einsum("ohf,bfd->bohd", w, x0) * h.unsqueeze(1)).sum(2)
        elif way == "maps":
            z = (torch.einsum("ohf,bhd->bofd", w, h) * x0.unsqueeze(1)).sum(2)
        else:
            raise ValueError(f"unknown CIN contraction order {way!r}")
        return z + conv.bias[:, None]


class InteractingLayer(nn.Module):
    """AutoInt's multi-head self-attention over fields with a projected residual and ReLU.

    [B, F, in_dim] -> [B, F, heads * head_dim]. Unscaled dot-product scores, as in the paper.
    """

    def __init__(self, in_dim: int, heads: int, head_dim: int, residual: bool = True):
        super().__init__()
        out = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(in_dim, 3 * out, bias=False)
        self.res = nn.Linear(in_dim, out, bias=False) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape
        q, k, v = self.qkv(x).view(b, f, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # [B, H, F, F]
        out = (attn @ v).transpose(1, 2).reshape(b, f, -1)
        if self.res is not None:
            out = out + self.res(x)
        return torch.relu(out)
