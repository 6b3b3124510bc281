"""Training configuration: one validated pydantic model, loaded from YAML or built in code.

Why a strict schema: a typo in a YAML key (``learning_rate`` for ``lr``) would otherwise be
silently ignored and a run would train with the default; here it fails at once, naming the
key, the file, and the keys that are allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recnas import configs
from recnas.limits import Device


class TrainConfig(BaseModel):
    """Everything that decides how a model is trained (not what the model is)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    optimizer: Literal["adam", "adagrad"] = "adam"
    lr: float = Field(1e-3, gt=0, description="learning rate of the non-embedding parameters")
    embedding_lr: float | None = Field(None, gt=0, description="separate lr for embedding tables (None = lr)")
    weight_decay: float = Field(0.0, ge=0)
    embedding_weight_decay: float | None = Field(
        None, ge=0,
        description="weight decay of the embedding tables (None = weight_decay, or 0 when embedding_lr is set); CTR models overfit through their embeddings, so this is the one that counts",
    )
    batch_size: int = Field(512, ge=1)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="total optimizer steps; when set, epochs is ignored")
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    eval_every: int | None = Field(None, ge=0, description="steps between evaluations; None = once per epoch, 0 = never")
    early_stopping_patience: int | None = Field(None, ge=1, description="evaluations without improvement before stopping")
    restore_best: bool = Field(True, description="end with the weights of the best validation log loss")
    max_train_rows: int | None = Field(None, ge=1)
    max_eval_rows: int | None = Field(None, ge=1)
    eval_batch_size: int | None = Field(None, ge=1, description="None = 4 x batch_size, at most 1,024 on the CPU")
    device: Device = "auto"
    resident_data: bool = Field(False, description="copy the splits to the device once (fast when they fit)")
    seed: configs.Seed = 0
    log_every: int = Field(50, ge=1)
    checkpoint_every: int | None = Field(None, ge=1, description="steps between resumable checkpoints; None = each epoch")
    tensorboard: bool = False
    grad_clip: float | None = Field(None, gt=0)
    inplace_distill: float = Field(
        0.0, ge=0.0, le=1.0,
        description="supernets only: each step also trains the largest path on the labels, and the sampled path on (1 - a) * label + a * the largest path's probability (a = this value; 0 = off)",
    )
    compile: bool = Field(False, description="torch.compile the model (CUDA graphs on GPU); a supernet then trains on its masked, fixed-shape path")

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads a bare `off` as False: accept it as the "off" it was meant to be; a bare
        # `on` (or yes, true) is True, which named no precision ("invalid value True")
        if v is True:
            raise ValueError("on/true is no precision (YAML reads a bare `on` as true): give bf16 or fp16, or auto (mixed precision where the device has it)")
        return "off" if v is False else v

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})")
        if self.early_stopping_patience is not None and self.eval_every == 0:  # it would never stop anything
            raise ValueError("early_stopping_patience counts evaluations, but eval_every is 0 (never evaluate)")
        return self

    @property
    def table_decay(self) -> float:
        """The weight decay the embedding tables get: `embedding_weight_decay`; unset, none with a
        separate `embedding_lr` (its meaning before that key existed), else `weight_decay`."""
        if self.embedding_weight_decay is not None:
            return self.embedding_weight_decay
        return 0.0 if self.embedding_lr is not None else self.weight_decay

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> "TrainConfig":
        """Validate a mapping; every problem becomes a ConfigError naming `source` and the key."""
        return configs.validate(cls, data, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """The config of the YAML file at `path`; a bad file, key or value is a ConfigError naming it."""
        return configs.load(cls, path)

    def with_overrides(self, *, source: str = "overrides", **overrides: Any) -> "TrainConfig":
        """A copy with the non-None `overrides` (keywords: `with_overrides(max_steps=100)`)
        applied and re-validated (CLI flags win over YAML); a problem is a ConfigError naming
        `source` and the key. Without any, `self`. `source` is keyword-only: a dict given in its
        place was taken as the source, and the overrides it held were dropped without a word."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        return TrainConfig.from_dict({**self.model_dump(), **changes}, source=source)

    def to_yaml(self, path: str | Path) -> None:
        """Write every key (defaults included) as YAML to `path`, atomically; `from_yaml` reads it back."""
        configs.write_text_atomic(path, yaml.safe_dump(self.model_dump(), sort_keys=False))


def merge_overrides(cfg: TrainConfig, **overrides: Any) -> TrainConfig:
    """Functional form of `TrainConfig.with_overrides` (None values mean "not given")."""
    return cfg.with_overrides(**overrides)
