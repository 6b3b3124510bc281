"""The fixed backbone used to compare embedding widths: a small DLRM-style model.

Field vectors (each projected to `proj_dim`, whatever its width) and a bottom-MLP image of
the dense features interact by pairwise dot products; the top MLP reads the dense vector,
the flattened field vectors and those dot products. The backbone never changes during the
search, so differences in loss come from the embedding widths alone.

`EmbeddingSizeNet(meta, max_width=W)` is the supernet (one W-wide table per field, width
masks); `EmbeddingSizeNet(meta, widths=[...])` is the compact model of one choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from recnas.data.schema import DatasetMeta, check_meta
from recnas.ops.embedding import MixedWidthEmbedding, ProjectedFieldEmbedding


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no activation after the last layer


class EmbeddingSizeNet(nn.Module):
    """The embedding size search's fixed DLRM-style backbone (this module's docstring) over the
    fields of `meta`: with `max_width` the supernet (one table of that width per field, any
    per-field widths up to it chosen at `forward`), with `widths` the compact model of one
    choice. Exactly one of the two is given; `proj_dim` and `hidden` size the backbone."""

    def __init__(self, meta: DatasetMeta, max_width: int | None = None, widths: Sequence[int] | None = None, proj_dim: int = 16, hidden: Sequence[int] = (64, 32)):
        super().__init__()
        check_meta(meta, "EmbeddingSizeNet's meta")
        if (max_width is None) == (widths is None):
            raise ValueError(f"give exactly one of max_width (the supernet) or widths (a compact model), got {'both' if widths is not None else 'neither'}")
        self.n_dense, self.n_fields, self.proj_dim = meta.n_dense, meta.n_sparse, proj_dim
        self.widths = None if widths is None else [int(w) for w in widths]
        if widths is None:
            self.embedding = ProjectedFieldEmbedding(meta.vocab_sizes, max_width, proj_dim)
        else:
            self.embedding = MixedWidthEmbedding(meta.vocab_sizes, self.widths, proj_dim)
        self.bottom = nn.Sequential(nn.Linear(meta.n_dense, proj_dim), nn.ReLU()) if meta.n_dense else None
        tokens = self.n_fields + (1 if meta.n_dense else 0)
        self.register_buffer("pairs", torch.tril_indices(tokens, tokens, -1), persistent=False)
        top_in = tokens * proj_dim + self.pairs.shape[1]
        self.top = _mlp([top_in, *hidden, 1])

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor, widths: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Logits [B]; `widths` (per field) selects a sub-embedding of the supernet."""
        if self.widths is None:
            w = None if widths is None else torch.as_tensor(widths, device=sparse.device)
            fields = self.embedding(sparse, w)
        else:
            if widths is not None and [int(x) for x in widths] != self.widths:
                raise ValueError("a compact model only runs its own widths")
            fields = self.embedding(sparse)
        tokens = fields if self.bottom is None else torch.cat([self.bottom(dense).unsqueeze(1), fields], 1)
        dots = torch.bmm(tokens, tokens.transpose(1, 2))[:, self.pairs[0], self.pairs[1]]
        return self.top(torch.cat([tokens.flatten(1), dots], 1)).squeeze(-1)

    @torch.no_grad()
    def inherit_from(self, supernet: "EmbeddingSizeNet") -> "EmbeddingSizeNet":
        """Load a compact model with the supernet's weights for its widths (same outputs)."""
        if self.widths is None or supernet.widths is not None:
            raise ValueError("inherit a compact model from a supernet")
        self.embedding.inherit_from(supernet.embedding)
        own = dict(self.named_parameters())
        for name, p in supernet.named_parameters():
            if not name.startswith("embedding."):
                own[name].copy_(p)
        return self
