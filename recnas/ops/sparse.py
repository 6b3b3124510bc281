"""Sparse operators: act on the block's combined tokens Z [B, t, E].

Each takes (z, h, d, key_mask) and returns (tokens [B, t, E], dense contribution [B, d] or
None): dot-product is a sparse-to-dense interaction, the others stay on the token side.
`key_mask` ([t] of 0/1, or None) marks the real tokens when the supernet runs a path masked at
full width (recnas.supernet.masks); only attention, which mixes tokens non-linearly, needs it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from recnas.ops.elastic import ElasticLinear, TokenLinear
from recnas.ops import token_attention
from recnas.ops.norm import RowLayerNorm


class EFC(nn.Module):
    """Linear over the token (field) axis: each output token mixes all input tokens."""

    def __init__(self, max_tokens: int, max_dense: int, emb_dim: int):
        super().__init__()
        self.linear = TokenLinear(max_tokens, max_tokens)

    def forward(self, z: torch.Tensor, h: torch.Tensor, d: int, key_mask: torch.Tensor | None = None):
        return self.linear(z, z.shape[1]), None


def pair_index(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Strict lower triangle in row-major order, so pairs among the first k tokens come first
    (the leading slice of the output projection then serves every smaller token count)."""
    rows, cols = torch.tril_indices(n, n, offset=-1)
    return rows, cols


class _PairGather(torch.autograd.Function):
    """`flat[:, index]` (the Gram matrix's lower triangle) whose backward is a gather as well:
    every Gram entry reads the gradient of the one pair that used it, or a zero column. The
    autograd default, a scatter-add of the pair gradients, cost 68 us per call at batch
    4,096 (bf16 atomics) on an H100, the gather 43 us."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor, n_zero: int):
        ctx.save_for_backward(inverse)
        ctx.n_zero = n_zero
        return flat.index_select(1, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return F.pad(grad, (0, ctx.n_zero)).index_select(1, inverse), None, None, None


class DotProduct(nn.Module):
    """Pairwise inner products of [dense token; tokens], then a linear map to the dense width.

    The tokens were already projected to t <= max_tokens by the block's input projection
    (operator balancing), so the pair count is bounded by (t+1)t/2 whatever the inputs.
    On CUDA the n = t+1 vectors are padded with zero vectors to a multiple of 8: an n x n
    Gram matrix of odd n has unaligned rows, for which cuBLAS falls back to slow batched
    kernels (~1 ms of a 16 ms masked step at batch 4,096; docs/benchmarks.md). The padding
    never enters a pair, so values and gradients are unchanged (tested).
    """

    def __init__(self, max_tokens: int, max_dense: int, emb_dim: int, pad_multiple: int = 8):
        super().__init__()
        n = max_tokens + 1
        self.max_vectors = n  # the dense token and at most max_tokens tokens
        self.dense_token = ElasticLinear(max_dense, emb_dim)
        self.out = ElasticLinear(n * (n - 1) // 2, max_dense)
        self.pad_multiple = pad_multiple
        # index/inverse of every Gram side m (precomputed: no index arithmetic per step)
        self._offsets: dict[int, tuple[int, int]] = {}
        index, inverse, at_i, at_v = [], [], 0, 0
        for m in range(2, -(-n // pad_multiple) * pad_multiple + 1):
            rows, cols = pair_index(m)
            pos = rows * m + cols
            inv = torch.full((m * m,), len(pos), dtype=torch.long)
            inv[pos] = torch.arange(len(pos))
            self._offsets[m] = (at_i, at_v)
            index.append(pos)
            inverse.append(inv)
            at_i, at_v = at_i + len(pos), at_v + m * m
        self.register_buffer("pair_positions", torch.cat(index), persistent=False)
        self.register_buffer("pair_inverse", torch.cat(inverse), persistent=False)

    def forward(self, z: torch.Tensor, h: torch.Tensor, d: int, key_mask: torch.Tensor | None = None):
        x = torch.cat([self.dense_token(h).unsqueeze(1), z], dim=1)  # [B, t+1, E]
        return z, self.out(self.pairs(x, self.pad_multiple if x.is_cuda else 1), d)

    def pairs(self, x: torch.Tensor, pad_multiple: int = 1) -> torch.Tensor:
        """<x_i, x_j> for i > j, [B, n(n-1)/2], with the n vectors padded to a multiple of
        `pad_multiple` for the Gram matrix."""
        n = x.shape[1]
        m = -(-n // pad_multiple) * pad_multiple
        if n > self.max_vectors or m not in self._offsets:  # was a bare KeyError from the offsets table
            raise ValueError(f"DotProduct(max_tokens={self.max_vectors - 1}) takes at most {self.max_vectors} vectors (the dense token and {self.max_vectors - 1} tokens), got {n}")
        if m > n:
            x = F.pad(x, (0, 0, 0, m - n))
        gram = torch.bmm(x, x.transpose(1, 2))
        k, full = n * (n - 1) // 2, m * (m - 1) // 2
        at_i, at_v = self._offsets[m]
        index = self.pair_positions[at_i : at_i + k]
        # the pairs of the padding rows (k..full) read zero columns in the backward
        inverse = self.pair_inverse[at_v : at_v + m * m]
        return _PairGather.apply(gram.flatten(1), index, inverse, full - k + 1)


FUSED_ATTENTION_MAX_BATCH = 65_535
# flash, or memory-efficient with a key mask; not cuDNN's, the slowest of the three on 8-wide heads
_FUSED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class Attention(nn.Module):
    """One transformer encoder layer over the tokens (multi-head self-attention + FFN)."""

    def __init__(self, max_tokens: int, max_dense: int, emb_dim: int, heads: int = 2):
        super().__init__()
        self.heads = heads if emb_dim % heads == 0 else 1
        self.qkv = nn.Linear(emb_dim, 3 * emb_dim)
        self.proj = nn.Linear(emb_dim, emb_dim)
        self.ffn = nn.Sequential(nn.Linear(emb_dim, 2 * emb_dim), nn.ReLU(), nn.Linear(2 * emb_dim, emb_dim))
        self.norm1 = RowLayerNorm(emb_dim)
        self.norm2 = RowLayerNorm(emb_dim)

    def forward(self, z: torch.Tensor, h: torch.Tensor, d: int, key_mask: torch.Tensor | None = None):
        b, t, e = z.shape
        qkv = self.qkv(z)
        if token_attention.supported(qkv, self.heads):  # CUDA: one Triton program per row and head
            att = token_attention.attention(qkv, self.heads, key_mask)
        else:
            q, k, v = qkv.view(b, t, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
            # CUDA's fused kernels index the batch on a grid axis of at most 65,535 blocks; past
            # that (and on the CPU, which has no such limit) PyTorch picks its own kernel
            backends = _FUSED_BACKENDS if b <= FUSED_ATTENTION_MAX_BATCH else [SDPBackend.MATH]
            with sdpa_kernel(backends) if z.is_cuda else contextlib.nullcontext():
                att = F.scaled_dot_product_attention(q, k, v, attn_mask=None if key_mask is None else key_mask.bool()[None, :])
            att = att.transpose(1, 2).reshape(b, t, e)
        z = self.norm1(z + self.proj(att))
        return self.norm2(z + self.ffn(z)), None


SPARSE_OPERATORS: dict[str, type[nn.Module]] = {"efc": EFC, "dot": DotProduct, "attention": Attention}
