"""Field embeddings: all categorical fields in one table with per-field offsets.

One fused lookup for every field at once (a single `F.embedding` call) instead of one
small table per field; this is what makes the embedding part fast on GPU and CPU.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FieldEmbedding(nn.Module):
    """Maps sparse ids [B, F] (per-field ids) to embeddings [B, F, dim].

    `widths` (optional, per field) masks each field's vector to its first w columns, so
    mixed embedding widths share one max-width table (embedding size search).
    """

    def __init__(self, vocab_sizes: list[int], dim: int, init_std: float = 0.01):
        super().__init__()
        sizes = torch.tensor([int(v) for v in vocab_sizes], dtype=torch.long)
        if (sizes <= 0).any():
            raise ValueError("every vocabulary size must be positive")
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.dim = dim
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.weight = nn.Parameter(torch.randn(int(sizes.sum()), dim) * init_std)

    @property
    def n_fields(self) -> int:
        return len(self.vocab_sizes)

    def forward(self, sparse: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        out = F.embedding(sparse + self.offsets, self.weight)
        if widths is not None:
            mask = torch.arange(self.dim, device=out.device)[None, :] < widths.to(out.device)[:, None]
            out = out * mask.to(out.dtype)
        return out
