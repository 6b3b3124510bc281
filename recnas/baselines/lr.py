"""Logistic regression: the floor every interaction model must beat."""

from __future__ import annotations

import torch

from recnas.baselines.base import Baseline, HParams
from recnas.baselines.layers import LinearTerm
from recnas.data.schema import DatasetMeta


class LogisticRegression(Baseline):
    """A weight per categorical id (1-wide fused table) plus a linear term on dense features.

    Parameters: sum(vocab_sizes) + n_dense + 1 (bias). No feature interactions at all.
    """

    name = "lr"
    Config = HParams

    def __init__(self, meta: DatasetMeta, **hparams):
        super().__init__(meta, **hparams)
        self.linear = LinearTerm(self.vocab_sizes, self.n_dense)

    def logits(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.linear(dense, sparse)
