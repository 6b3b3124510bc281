"""Settings of the embedding size search: one strict pydantic model, loadable from YAML.

Sections: `model` (the fixed backbone), `supernet` (weight-sharing training), `search`
(REINFORCE), `retrain` (a `TrainConfig` for the from-scratch model of the result).
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from recnas import configs
from recnas.limits import Device
from recnas.train.config import TrainConfig

DEFAULT_WIDTHS = (2, 4, 8, 16, 32, 64)
RETRAIN_DEFAULTS = {"epochs": 2, "batch_size": 512}  # where `retrain` departs from TrainConfig's own defaults


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Strict):
    proj_dim: int = Field(16, ge=1, description="common dim every field is projected to")
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = (64, 32)  # 0 would train a zero-wide layer, < 0 fails in torch


class SupernetSettings(_Strict):
    sampler: Literal["adaptive", "uniform"] = "adaptive"
    steps: int | None = Field(None, ge=1, description="training steps; None = `epochs` passes over the train split")
    epochs: float = Field(2.0, gt=0, description="used when steps is None (the supernet overfits when trained long)")
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_train_rows: int | None = Field(None, ge=1)
    floor: float = Field(0.5, gt=0, le=1, description="adaptive sampler: share of uniform probability kept; above 0, or a width that stops improving is never drawn again")


class SearchSettings(_Strict):
    iterations: int = Field(150, ge=1)
    samples_per_iter: int = Field(8, ge=2)
    policy_lr: float = Field(0.1, gt=0)
    baseline_decay: float = Field(0.9, ge=0, lt=1, description="moving-average reward baseline")
    entropy_coef: float = Field(1e-3, ge=0)
    penalty_weight: float = Field(1.0, ge=0, description="reward lost per unit of relative budget overshoot")
    val_rows: int = Field(8192, ge=1, description="fixed validation subsample that scores configurations")


class EmbedSearchConfig(_Strict):
    """Settings of `recnas embed search` / `recnas.embedding.run_search` (this module's
    docstring names the sections); every key has a default, unknown keys are errors."""

    widths: tuple[int, ...] = DEFAULT_WIDTHS
    seed: configs.Seed = 0
    device: Device = Field("auto", description="supernet training and search scoring")
    model: ModelSettings = ModelSettings()
    supernet: SupernetSettings = SupernetSettings()
    search: SearchSettings = SearchSettings()
    retrain: TrainConfig = TrainConfig(**RETRAIN_DEFAULTS)

    @field_validator("widths")
    @classmethod
    def _widths(cls, widths: tuple[int, ...]) -> tuple[int, ...]:
        """Positive, sorted and de-duplicated, as `--widths` is: the search steps to the next
        index as the next larger width, so an unsorted list would give a silently worse result."""
        if not widths or min(widths) <= 0:
            raise ValueError("must be a non-empty list of positive integers")
        return tuple(sorted(set(widths)))

    @field_validator("retrain", mode="before")
    @classmethod
    def _retrain_keeps_its_defaults(cls, retrain):
        """A `retrain:` section is merged key by key into the section's defaults, as `model`,
        `supernet` and `search` are: `retrain: {lr: 0.003}` used to train 1 epoch at batch 512
        (TrainConfig's own defaults), not the 2 epochs the defaults (and docs/embedding.md) state."""
        if isinstance(retrain, dict):
            return {**RETRAIN_DEFAULTS, **retrain}
        return retrain

    @field_validator("retrain")
    @classmethod
    def _retrain_has_no_run_folder(cls, retrain: TrainConfig) -> TrainConfig:
        """The retraining writes OUT/model.pt only, no run folder of its own: `tensorboard` logs
        and `checkpoint_every` checkpoints had nowhere to go and were silently not written."""
        given = [key for key in ("tensorboard", "checkpoint_every") if getattr(retrain, key)]
        if given:
            raise ValueError(f"{' and '.join(given)} would write into a training run folder, which the retraining does not have (it writes OUT/model.pt only); leave {'them' if len(given) > 1 else 'it'} out")
        return retrain

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> "EmbedSearchConfig":
        """The config of the YAML file at `path` (None: the defaults); a bad file or key is a ConfigError naming it."""
        return cls() if path is None else configs.load(cls, path)

    @classmethod
    def from_dict(cls, data, source: str = "config") -> "EmbedSearchConfig":
        """The config of a mapping, validated as a file is; problems are a ConfigError naming `source` and the key."""
        return configs.validate(cls, data, source)
