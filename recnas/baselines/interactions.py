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


def check_cin_sizes(layer_sizes: list[int] | tuple[int, ...], split_half: bool = True) -> None:
    """Raise ValueError on layer sizes a CIN cannot be built from: the one rule that the xDeepFM
    baseline's config, a space's `cin_head` and `cin_layers` itself apply."""
    if not layer_sizes or any(s <= 0 for s in layer_sizes):
        raise ValueError("a CIN needs at least one layer, and positive layer sizes")
    if split_half and any(s % 2 for s in layer_sizes[:-1]):
        raise ValueError("every CIN layer but the last needs an even size (half of its maps go on to the next)")


def cin_layers(n_fields: int, layer_sizes: list[int] | tuple[int, ...], split_half: bool = True) -> list[tuple[int, int, int]]:
    """(maps in, maps out, maps sent on to the next layer) per CIN layer: the layout that `CIN`
    builds and the cost model counts (recnas/hardware/costs.py). With `split_half` a non-final
    layer sends half its maps on and pools the other half; otherwise it pools all of them and
    sends all on (0 sent on means all)."""
    check_cin_sizes(layer_sizes, split_half)
    layers, prev = [], n_fields
    for k, size in enumerate(layer_sizes):
        half = size // 2 if split_half and k < len(layer_sizes) - 1 else 0
        layers.append((prev, size, half))
        prev = half or size
    return layers


class CIN(nn.Module):
    """xDeepFM's compressed interaction network on fields [B, F, d] -> pooled features [B, out_dim].

    Layer k: outer (Hadamard) products of its H_k maps with the F input fields, compressed by a
    1x1 convolution to H_{k+1} maps (linear, as in the paper's Eq. 6); every layer's maps are
    sum-pooled over d. With `split_half`, the paper's default, each non-final layer sends half
    its maps to the output and half to the next layer.
    """

    def __init__(self, n_fields: int, layer_sizes: list[int], split_half: bool = True):
        super().__init__()
        layers = cin_layers(n_fields, layer_sizes, split_half)
        self.convs = nn.ModuleList(nn.Conv1d(n_in * n_fields, size, kernel_size=1) for n_in, size, _ in layers)
        self.split = [half for _, _, half in layers]
        self.out_dim = sum(size - half for _, size, half in layers)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        # every layer works on maps laid out [maps, B*d] (d fastest): the contracted orders are
        # then one matrix product per layer and their Hadamard products run over contiguous rows
        b, n_f, d = x0.shape
        x0t = _maps_last(x0)
        h, pooled = x0t, []
        for conv, half in zip(self.convs, self.split):
            z = self._layer_t(conv, h, x0t, b, d)
            if half:
                h, out = z[:half], z[half:]
            else:
                h = out = z
            pooled.append(out.view(out.shape[0], b, d).sum(-1))
        return torch.cat(pooled, dim=0).t()

    @staticmethod
    def layer(conv: nn.Conv1d, h: torch.Tensor, x0: torch.Tensor, way: str | None = None) -> torch.Tensor:
        """conv(outer products of h's maps with x0's fields) -> [B, O, d], computed one of three
        equal ways, by default the one with the smallest intermediate: the outer products
        [B, H*F, d] (the paper's), or W contracted with the fields first [B, O, H, d], or with the
        maps first [B, O, F, d]. With the `cpu` budget's CIN [16, 16] over 39 fields the outer
        products were most of xDeepFM's CPU time (docs/benchmarks.md). A conv with forward hooks
        (the PIM profiler's, quantisation's) takes the paper's way: only that calls the conv, so
        only then do the hooks see it as the crossbar layer it is."""
        b, _, d = x0.shape
        z = CIN._layer_t(conv, _maps_last(h), _maps_last(x0), b, d, way)
        return z.view(z.shape[0], b, d).transpose(0, 1)

    @staticmethod
    def _layer_t(conv: nn.Conv1d, h: torch.Tensor, x0: torch.Tensor, b: int, d: int, way: str | None = None) -> torch.Tensor:
        """`layer` on maps laid out [H, B*d] and fields [F, B*d] -> [O, B*d]."""
        o, n_h, n_f = conv.out_channels, h.shape[0], x0.shape[0]
        sizes = {"outer": n_h * n_f, "fields": o * n_h, "maps": o * n_f}
        hooked = bool(conv._forward_hooks or conv._forward_pre_hooks)
        way = way or ("outer" if hooked else min(sizes, key=sizes.get))
        if way == "outer":
            outer = torch.einsum("hbd,fbd->bhfd", h.view(n_h, b, d), x0.view(n_f, b, d)).flatten(1, 2)
            return _maps_last(conv(outer))
        w = conv.weight.view(o, n_h, n_f)
        if way == "fields":
            z = bilinear_contract(w.reshape(o * n_h, n_f), x0, h)
        elif way == "maps":
            z = bilinear_contract(w.transpose(1, 2).reshape(o * n_f, n_h), h, x0)
        else:
            raise ValueError(f"unknown CIN contraction order {way!r}")
        return z + conv.bias[:, None]


def _maps_last(x: torch.Tensor) -> torch.Tensor:
    """[B, C, d] -> [C, B*d] (a copy)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


# floats of one block's [O, K, cols] intermediate in bilinear_contract on the CPU: ~1 MiB, so
# it stays in cache between its matrix product and the Hadamard product that reduces it
_CONTRACT_BLOCK = 1 << 18


def bilinear_contract(a: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """z[o, n] = sum_k (a @ p)[o*K + k, n] * q[k, n] for a [O*K, M], p [M, N], q [K, N] -> [O, N].

    On the CPU it runs over blocks of columns and recomputes each block's product in the
    backward instead of keeping the [O, K, N] intermediate: that tensor (10M floats for the
    `cpu` budget's first CIN layer at batch 1,024) was written and re-read from memory several
    times per step, which made the CIN memory-bound. Elsewhere it is the plain formula.
    """
    k = q.shape[0]
    if p.device.type == "cpu":
        return _BlockedBilinear.apply(a, p, q, max(64, _CONTRACT_BLOCK // a.shape[0]))
    return ((a @ p).view(a.shape[0] // k, k, -1) * q).sum(1)


class _BlockedBilinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, p, q, cols):
        ctx.save_for_backward(a, p, q)
        ctx.cols = cols
        k = q.shape[0]
        o = a.shape[0] // k
        return torch.cat([((a @ p[:, s : s + cols]).view(o, k, -1) * q[:, s : s + cols]).sum(1) for s in range(0, p.shape[1], cols)], dim=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gz):
        a, p, q = ctx.saved_tensors
        cols, k = ctx.cols, q.shape[0]
        o = a.shape[0] // k
        ga = torch.zeros_like(a) if ctx.needs_input_grad[0] else None
        gps, gqs = [], []
        for s in range(0, p.shape[1], cols):
            pc, qc, gc = p[:, s : s + cols], q[:, s : s + cols], gz[:, s : s + cols].unsqueeze(1)
            if ctx.needs_input_grad[2]:
                gqs.append(((a @ pc).view(o, k, -1) * gc).sum(0))
            gy = (gc * qc).view(o * k, -1)
            if ga is not None:
                ga.addmm_(gy, pc.t())
            if ctx.needs_input_grad[1]:
                gps.append(a.t() @ gy)
        gp = torch.cat(gps, dim=1) if gps else None
        gq = torch.cat(gqs, dim=1) if gqs else None
        return ga, gp, gq, None


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
