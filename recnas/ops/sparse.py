"""Sparse operators: act on the block's combined tokens Z [B, t, E].

Each takes (z, h, d, key_mask) and returns (tokens [B, t, E], dense contribution [B, d] or
None): dot-product is a sparse-to-dense interaction, the others stay on the token side.
`key_mask` ([t] of 0/1, or None) marks the real tokens when the supernet runs a path masked at
full width (recnas.supernet.masks); only attention, which mixes tokens non-linearly, needs it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from recnas.ops.elastic import ElasticLinear, TokenLinear
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


class DotProduct(nn.Module):
    """Pairwise inner products of [dense token; tokens], then a linear map to the dense width.

    The tokens were already projected to t <= max_tokens by the block's input projection
    (operator balancing), so the pair count is bounded by (t+1)t/2 whatever the inputs.
    """

    def __init__(self, max_tokens: int, max_dense: int, emb_dim: int):
        super().__init__()
        n = max_tokens + 1
        self.dense_token = ElasticLinear(max_dense, emb_dim)
        self.out = ElasticLinear(n * (n - 1) // 2, max_dense)
        rows, cols = pair_index(n)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, z: torch.Tensor, h: torch.Tensor, d: int, key_mask: torch.Tensor | None = None):
        x = torch.cat([self.dense_token(h).unsqueeze(1), z], dim=1)  # [B, t+1, E]
        n = x.shape[1]
        gram = torch.bmm(x, x.transpose(1, 2))
        k = n * (n - 1) // 2
        # one index_select on the flattened Gram matrix: its backward is a scatter-add, where
        # gram[:, rows, cols] would backpropagate through the much slower sort-based index_put
        pairs = gram.flatten(1).index_select(1, self.rows[:k] * n + self.cols[:k])
        return z, self.out(pairs, d)


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
        q, k, v = self.qkv(z).view(b, t, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        # explicit softmax(QK^T/sqrt(d))V: heads are tiny (d = E/heads), where fused kernels
        # fail on large batches (grid limits) or under bf16 (cuDNN), and gain nothing
        scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        if key_mask is not None:  # padding tokens of a masked path get no attention
            scores = scores.masked_fill(key_mask == 0, float("-inf"))
        # softmax in the scores' dtype: under bf16 autocast it would otherwise run (and store the
        # probabilities) in fp32, twice the memory traffic on the step's largest tensor; the
        # kernel accumulates in fp32 either way, as fused attention kernels do
        att = torch.matmul(torch.softmax(scores, -1, dtype=scores.dtype), v).transpose(1, 2).reshape(b, t, e)
        z = self.norm1(z + self.proj(att))
        return self.norm2(z + self.ffn(z)), None


SPARSE_OPERATORS: dict[str, type[nn.Module]] = {"efc": EFC, "dot": DotProduct, "attention": Attention}
