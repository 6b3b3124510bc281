"""A NASRec choice block, sized by a *capacity* (which inputs, operators and widths it holds).

The supernet builds every block at full capacity; a standalone subnet builds each block with
exactly the inputs, operators and widths its architecture chose. The forward code is the
same for both, which is why inherited subnets reproduce the supernet's outputs.

Operator balancing: every dense input j gets its own projection W_j (d x width_j) and every
sparse input its own token projection (t x tokens_j); the block's input is their sum. So a
block's parameter count grows *linearly* with the number of connected inputs, and the
pairwise dot-product sees at most t+1 tokens whatever the fan-in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from recnas.ops.dense import DENSE_OPERATORS
from recnas.ops.elastic import ElasticLinear, TokenLinear
from recnas.ops.sparse import SPARSE_OPERATORS
from recnas.space.arch import BlockSpec
from recnas.supernet.masks import BlockMasks


@dataclass(frozen=True)
class BlockCapacity:
    dense_inputs: dict[int, int]  # source index -> max width of that source (0 = raw dense)
    sparse_inputs: dict[int, int]  # source index -> max token count (0 = raw field embeddings)
    dense_ops: tuple[str, ...]
    sparse_ops: tuple[str, ...]
    dense_dim: int
    sparse_dim: int
    emb_dim: int


class ChoiceBlock(nn.Module):
    def __init__(self, cap: BlockCapacity):
        super().__init__()
        self.cap = cap
        d, t, e = cap.dense_dim, cap.sparse_dim, cap.emb_dim
        self.dense_proj = nn.ModuleDict({str(j): ElasticLinear(w, d, bias=False) for j, w in cap.dense_inputs.items() if w > 0})
        self.dense_bias = nn.Parameter(torch.zeros(d))
        self.sparse_proj = nn.ModuleDict({str(j): TokenLinear(n, t, bias=False, fold=j == 0) for j, n in cap.sparse_inputs.items()})
        if "0" in self.sparse_proj:
            # raw field embeddings reach the interaction operators unmixed at first, as in
            # DLRM's pairwise dots: a DLRM-like subnet on 1M synthetic rows reached 0.4873 test
            # log loss with this init and 0.4990 with random field mixing (docs/benchmarks.md)
            self.sparse_proj["0"].unmixed_()
            for j, proj in self.sparse_proj.items():
                if j != "0":
                    # earlier blocks' tokens join the raw fields as a no-op and grow in by
                    # gradient: they carry their block's dense output broadcast onto every token,
                    # which, mixed in at random, swamps the raw fields' pairwise dots (a finalist
                    # trained to 0.5108 validation log loss, 0.4794 with this; docs/benchmarks.md)
                    nn.init.zeros_(proj.weight)
        self.dense_ops = nn.ModuleDict({name: DENSE_OPERATORS[name](d) for name in cap.dense_ops})
        self.sparse_ops = nn.ModuleDict({name: SPARSE_OPERATORS[name](t, d, e) for name in cap.sparse_ops})
        self.sparse_to_dense = ElasticLinear(t * e, d)  # merger: flattened tokens -> dense
        self.dense_to_sparse = ElasticLinear(d, e)  # merger: dense -> a vector added to every token

    def forward(self, dense_outs: list[torch.Tensor], sparse_outs: list[torch.Tensor], spec: BlockSpec | None = None, masks: BlockMasks | None = None):
        """Sliced (`spec`: only the chosen inputs and operators, leading weight slices) or
        masked (`masks`: every input and operator at full width, weighted by the path's 0/1
        masks; recnas.supernet.masks). Both compute the same function."""
        cap = self.cap
        if masks is None:
            d, t = spec.dense_dim, spec.sparse_dim
            dense_in, sparse_in = [(j, None) for j in spec.dense_inputs], [(j, None) for j in spec.sparse_inputs]
            dense_ops, sparse_ops = [(n, None) for n in spec.dense_ops], [(n, None) for n in spec.sparse_ops]
            width = tokens = key_mask = active = None
        else:
            d, t = cap.dense_dim, cap.sparse_dim
            dense_in, sparse_in = [(j, masks.dense_inputs[j]) for j in cap.dense_inputs], [(j, masks.sparse_inputs[j]) for j in cap.sparse_inputs]
            dense_ops = [(n, masks.dense_ops[k]) for k, n in enumerate(cap.dense_ops)]
            sparse_ops = [(n, masks.sparse_ops[k]) for k, n in enumerate(cap.sparse_ops)]
            width, tokens, key_mask = masks.width, masks.tokens[:, None], masks.tokens
            active = masks.tokens.sum().long()  # the path's token count, for the raw fields' fold
        batch = sparse_outs[0].shape[0]
        h = self.dense_bias[:d].expand(batch, d)
        for j, w in dense_in:
            if str(j) in self.dense_proj:  # raw dense may have width 0 (e.g. Avazu)
                h = h + _weighted(self.dense_proj[str(j)](dense_outs[j], d), w)
        h = _weighted(h, width)
        z = _weighted(sum(_weighted(self.sparse_proj[str(j)](sparse_outs[j], t, active), w) for j, w in sparse_in), tokens)

        dense = _weighted(sum(_weighted(self.dense_ops[name](h), w) for name, w in dense_ops), width)
        out, extra = None, None
        for name, w in sparse_ops:
            s, c = self.sparse_ops[name](z, h, d, key_mask)
            s = _weighted(s, w)
            out = s if out is None else out + s
            if c is not None:
                c = _weighted(c, w)
                extra = c if extra is None else extra + c
        out = _weighted(out, tokens)
        merged = dense + self.sparse_to_dense(out.flatten(1), d)
        if extra is not None:
            merged = merged + extra
        out_tokens = _weighted(out + self.dense_to_sparse(dense, out.shape[-1]).unsqueeze(1), tokens)
        return _weighted(merged, width), out_tokens  # no normalisation: a LayerNorm here cost ~0.015 val log loss on the synthetic benchmark


def _weighted(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """x * w for a path mask (or weight) w; x itself on the sliced path (w is None)."""
    return x if w is None else x * w
