"""What every baseline shares: validated hyper-parameters and the (dense, sparse) -> logit contract.

Hyper-parameters live in one pydantic model per baseline (extra="forbid"), so a typo is an
error rather than a silently ignored option, and `model.hparams` (all values, defaults
included) is enough to rebuild the exact architecture from a checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from recnas.configs import validate
from recnas.data.schema import DatasetMeta, check_meta
from recnas.errors import ConfigError, DataError


class HParams(BaseModel):
    """Base of every baseline's hyper-parameters; no hyper-parameters at all is valid (lr)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbedHParams(HParams):
    embed_dim: PositiveInt = 16


class DeepHParams(EmbedHParams):
    """Embedding plus one MLP ("deep" part); `mlp` lists hidden widths, the 1-wide head is implicit."""

    mlp: list[PositiveInt] = [400, 400, 400]
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False


def describe_hparams(config: type[HParams]) -> str:
    """'name=default, ...' for error messages and docs."""
    fields = config.model_fields
    if not fields:
        return "none (this model takes no hyper-parameters)"
    return ", ".join(f"{k}={f.get_default(call_default_factory=True)!r}" for k, f in fields.items())


def parse_hparams(name: str, config: type[HParams], hparams: dict[str, Any]) -> HParams:
    """Validate `hparams` against `config` with the rules and wording of every config
    (recnas.configs.validate: keys named by their path, non-finite or quoted numbers refused);
    every problem is reported in one ConfigError that names the baseline and lists its
    hyper-parameters with their defaults."""
    try:
        return validate(config, hparams, f"{name} hyper-parameters")
    except ConfigError as exc:
        raise ConfigError(f"{exc}. Allowed: {describe_hparams(config)}") from None


class Baseline(nn.Module):
    """A CTR model: forward(dense float32 [B, n_dense], sparse int64 [B, n_sparse]) -> logits [B].

    Subclasses set `name` and `Config`, call `super().__init__(meta, **hparams)` and read
    their validated hyper-parameters from `self.cfg`; they implement `logits`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[HParams]] = HParams

    def __init__(self, meta: DatasetMeta, **hparams: Any):
        super().__init__()
        check_meta(meta, f"{self.name}'s meta")
        self.cfg = parse_hparams(self.name, self.Config, hparams)
        self.hparams: dict[str, Any] = self.cfg.model_dump()
        vocab = [int(v) for v in meta.vocab_sizes]
        if not vocab:
            raise DataError(f"{self.name}: dataset {meta.name!r} has no categorical fields; every baseline needs at least one")
        if len(vocab) != meta.n_sparse:
            raise DataError(f"dataset {meta.name!r}: {meta.n_sparse} categorical fields but {len(vocab)} vocabulary sizes")
        if min(vocab) <= 0:
            raise DataError(f"dataset {meta.name!r}: vocabulary sizes must be positive, got {vocab}")
        self.vocab_sizes = vocab
        self.n_dense = meta.n_dense
        self.n_sparse = len(vocab)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Logits [B] (pre-sigmoid) of dense float32 [B, n_dense] and sparse int64 [B, n_sparse];
        inputs of another width are a DataError."""
        if dense.dim() != 2 or sparse.dim() != 2 or dense.shape[1] != self.n_dense or sparse.shape[1] != self.n_sparse:
            raise DataError(
                f"{self.name}: expected dense [B, {self.n_dense}] and sparse [B, {self.n_sparse}], "
                f"got {list(dense.shape)} and {list(sparse.shape)}; is this the dataset the model was built for?"
            )
        return self.logits(dense, sparse)

    def logits(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """The model's logits [B] of inputs `forward` has checked; each baseline implements it."""
        raise NotImplementedError
