"""The optional CIN head: xDeepFM's compressed interaction network beside the searched blocks.

Why: xDeepFM was the one baseline the search did not beat. Its CIN (vector-wise products of
the raw fields, sum-pooled straight into the logit) is a different kind of interaction from
any NASRec operator. The searched blocks retrained with it beside them beat xDeepFM on 10 of 12
seeds at 200k synthetic rows, and the search with it beat every baseline on 11 of 12 seeds
(docs/benchmarks.md, "a CIN head beside the searched blocks"). At 1M rows the winners with a
CIN [64, 64] head drew level with xDeepFM or passed it on every seed ("the CIN head at 1M
rows"). It needs table decay: without it the head made the models overfit sooner.

It is a fixed part of every architecture of a space with `cin_head`, never searched, and it
lives in the trained models only: the supernet has no head, and candidates are scored
without it. Trained inside the supernet, it had made every candidate score alike and its
shared weights overfit (docs/benchmarks.md, "xDeepFM's CIN as a fixed part of every
architecture"); so the blocks are ranked on their own and every finalist trains with the head.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from recnas.baselines.interactions import CIN
from recnas.baselines.layers import LinearTerm, NumericEmbedding


class CINHead(nn.Module):
    """xDeepFM without its MLP: linear(sum-pooled CIN maps) over the raw categorical embeddings
    [B, F, e] and every numeric feature as one more field (value * a learnt vector), plus the
    first-order term (a weight per id, a linear map of the numeric features). Output [B, 1].
    `split_half`: the space's `cin_head_split`, passed to `CIN` (xDeepFM's paper split, or
    BARS's CIN that forwards and pools every map).

    The first-order term is xDeepFM's too: with it the head gained 0.0015 over the blocks alone
    on seeds 0-5 at 200k rows, without it 0.0011 (docs/benchmarks.md, same section)."""

    keeps_own_init = True  # the supernet has no head to inherit from (recnas/supernet/net.py: inherit_weights)

    def __init__(self, vocab_sizes: list[int], n_dense: int, emb_dim: int, layer_sizes: tuple[int, ...], split_half: bool = True):
        super().__init__()
        self.numeric = NumericEmbedding(n_dense, emb_dim) if n_dense > 0 else None
        self.cin = CIN(len(vocab_sizes) + n_dense, list(layer_sizes), split_half)
        self.out = nn.Linear(self.cin.out_dim, 1)
        self.linear = LinearTerm(vocab_sizes, n_dense)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        fields = emb if self.numeric is None else torch.cat([emb, self.numeric(dense)], dim=1)
        return self.out(self.cin(fields)) + self.linear(dense, sparse).unsqueeze(-1)
