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
        if any(int(v) <= 0 for v in vocab_sizes):
            raise ValueError("every vocabulary size must be positive")
        sizes = torch.tensor([int(v) for v in vocab_sizes], dtype=torch.long)
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.dim = dim
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.weight = nn.Parameter(torch.randn(sum(self.vocab_sizes), dim) * init_std)

    @property
    def n_fields(self) -> int:
        return len(self.vocab_sizes)

    @torch.no_grad()
    def fan_uniform_(self) -> "FieldEmbedding":
        """Field with n ids ~ U(-sqrt(1/n), sqrt(1/n)), as the reference DLRM code initialises tables.

        Multiplicative interactions (dot products, DLRM's, NASRec's) of near-zero embeddings sit
        at a saddle: a small DLRM without dense features initialised at std 0.01 stayed at chance
        on the planted-interaction test store, and NASRec subnets trained on 1M synthetic rows
        reached 0.0044-0.0098 lower test log loss with this init than with std 0.01 (docs/benchmarks.md).
        """
        offset = 0
        for n in self.vocab_sizes:  # the offsets counted here, not read from the buffer: a model built on the meta device has no values
            bound = (1.0 / n) ** 0.5
            self.weight[offset : offset + n].uniform_(-bound, bound)
            offset += n
        return self

    def forward(self, sparse: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        out = F.embedding(sparse + self.offsets, self.weight)
        if widths is not None:
            mask = torch.arange(self.dim, device=out.device)[None, :] < widths.to(out.device)[:, None]
            out = out * mask.to(out.dtype)
        return out


def masked_projection(proj: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Zero the rows >= w_f of each field's projection [F, W, D].

    Masking the (small) projection instead of the [B, F, W] lookups gives the same output and
    the same zero gradient for the unused table columns, at a fraction of the work.
    """
    mask = torch.arange(proj.shape[1], device=proj.device)[None, :] < widths.to(proj.device)[:, None]
    return proj * mask.to(proj.dtype)[:, :, None]


class ProjectedFieldEmbedding(nn.Module):
    """Embedding-size supernet: one max-width table per field, then a per-field projection to `out_dim`.

    A width-w field uses the first w table columns and the first w projection rows, so every
    candidate width of every field shares weights, and any mix of widths yields [B, F, out_dim]
    for the same downstream model.
    """

    def __init__(self, vocab_sizes: list[int], max_width: int, out_dim: int, init_std: float = 0.01):
        super().__init__()
        self.table = FieldEmbedding(vocab_sizes, max_width, init_std)
        self.proj = nn.Parameter(torch.randn(len(vocab_sizes), max_width, out_dim) / max_width**0.5)
        self.max_width, self.out_dim = max_width, out_dim

    def forward(self, sparse: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        proj = self.proj if widths is None else masked_projection(self.proj, widths)
        return torch.einsum("bfw,fwd->bfd", self.table(sparse), proj)


class MixedWidthEmbedding(nn.Module):
    """Compact per-field widths: field i stores vocab_i * w_i parameters, projected to `out_dim`.

    Fields of equal width share one fused table (one lookup per distinct width). The
    projection starts as the identity (`identity=True`, needs w_i <= out_dim: the output then
    equals a zero-padded width-w embedding, i.e. FieldEmbedding with width masks) or random.
    """

    def __init__(self, vocab_sizes: list[int], widths: list[int], out_dim: int, init_std: float = 0.01, identity: bool = False):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != len(vocab_sizes):
            raise ValueError(f"{len(widths)} widths for {len(vocab_sizes)} fields")
        if any(w <= 0 for w in widths):
            raise ValueError("every embedding width must be positive")
        if identity and max(widths) > out_dim:
            raise ValueError(f"identity projection needs widths <= out_dim ({out_dim})")
        self.vocab_sizes, self.widths, self.out_dim = [int(v) for v in vocab_sizes], widths, out_dim
        self.group_widths = sorted(set(widths))
        groups = [[i for i, w in enumerate(widths) if w == gw] for gw in self.group_widths]
        self.tables = nn.ModuleList(FieldEmbedding([self.vocab_sizes[i] for i in g], w, init_std) for g, w in zip(groups, self.group_widths))
        projs = [torch.eye(w, out_dim).repeat(len(g), 1, 1) if identity else torch.randn(len(g), w, out_dim) / w**0.5 for g, w in zip(groups, self.group_widths)]
        self.projs = nn.ParameterList(nn.Parameter(p) for p in projs)
        order = [i for g in groups for i in g]
        self.groups = groups
        self.register_buffer("inverse", torch.argsort(torch.tensor(order)), persistent=False)
        for k, g in enumerate(groups):
            self.register_buffer(f"fields_{k}", torch.tensor(g, dtype=torch.long), persistent=False)

    @property
    def table_params(self) -> int:
        return sum(v * w for v, w in zip(self.vocab_sizes, self.widths))

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        parts = [
            torch.einsum("bfw,fwd->bfd", table(sparse.index_select(1, getattr(self, f"fields_{k}"))), proj)
            for k, (table, proj) in enumerate(zip(self.tables, self.projs))
        ]
        return torch.cat(parts, 1).index_select(1, self.inverse)

    @torch.no_grad()
    def inherit_from(self, source: nn.Module) -> None:
        """Copy the leading columns of a FieldEmbedding (projection = identity) or the leading
        columns and projection rows of a ProjectedFieldEmbedding, so outputs match exactly."""
        table = source.table if isinstance(source, ProjectedFieldEmbedding) else source
        if not isinstance(table, FieldEmbedding) or table.vocab_sizes != self.vocab_sizes:
            raise ValueError("source embedding has other fields or vocabulary sizes")
        if table.dim < max(self.widths):
            raise ValueError(f"source embedding width {table.dim} < widest field {max(self.widths)}")
        offsets = table.offsets.tolist()
        for k, (g, w) in enumerate(zip(self.groups, self.group_widths)):
            rows = torch.cat([table.weight[offsets[i] : offsets[i] + self.vocab_sizes[i], :w] for i in g])
            self.tables[k].weight.copy_(rows)
            if isinstance(source, ProjectedFieldEmbedding):
                if source.out_dim != self.out_dim:
                    raise ValueError(f"source projects to {source.out_dim}, this embedding to {self.out_dim}")
                self.projs[k].copy_(source.proj[g, :w])
            elif w > self.out_dim:
                raise ValueError(f"width {w} > out_dim {self.out_dim}: no identity projection")
            else:
                self.projs[k].copy_(torch.eye(w, self.out_dim).repeat(len(g), 1, 1))
