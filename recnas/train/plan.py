"""What a training run will do, known before its Trainer is built: the steps it takes, the rows
of its batches and its lr at each step, and the checks on them that commands run before any
work (a warmup past the run, a global batch larger than the split, BatchNorm on one-row batches)."""

from __future__ import annotations

import math

import torch.nn as nn

from recnas.data.loader import batch_count
from recnas.errors import ConfigError, DataError
from recnas.train.config import TrainConfig


def drops_last(rows: int, batch_size: int) -> bool:
    """Whether training drops a last partial batch: always, unless the split is smaller than one."""
    return rows >= batch_size


def rows_trained_on(cfg: TrainConfig, train_rows: int) -> int:
    """The rows of a train split of `train_rows` rows that a run of `cfg` reads (`max_train_rows`)."""
    return train_rows if cfg.max_train_rows is None else min(train_rows, cfg.max_train_rows)


def planned_steps(cfg: TrainConfig, train_rows: int, world_size: int = 1) -> int:
    """The steps a run of `cfg` takes on a train split of `train_rows` rows (Trainer.total_steps,
    known before a Trainer is built)."""
    if cfg.max_steps:
        return cfg.max_steps
    n = rows_trained_on(cfg, train_rows)
    return cfg.epochs * batch_count(n, cfg.batch_size, drops_last(n, cfg.batch_size), world_size)


def refuse_warmup_past(warmup: int, total: int, given: str, run: str, length: str, option: str, longer: str = "train longer") -> None:
    """A warmup longer than the run: the lr would never reach its value and the run would train
    at a fraction of the lr it records. Refused before the work by the commands that know the
    option's name (the Trainer itself only warns: a job's preset on small data)."""
    if 0 < total < warmup:
        raise ConfigError(f"{given} would outlast the {total} steps of {run} ({length}): the lr would never reach its value; give {option} of at most {total}, or {longer}")


def check_global_batch(rows: int, batch_size: int, world_size: int) -> None:
    """Under --nproc every step takes one whole global batch (a batch per process): a train split
    of fewer rows has no step to take (it used to be refused as "the train split has no rows")."""
    if world_size > 1 and 0 < rows < batch_size * world_size:
        raise DataError(
            f"the train split's {rows:,} rows are fewer than one global batch of {world_size} processes x batch_size "
            f"{batch_size} = {batch_size * world_size:,} rows; lower batch_size or --nproc"
        )


def train_batch_rows(cfg: TrainConfig, train_rows: int) -> int:
    """Rows of each training batch (each process's under --nproc): `batch_size`, or the whole
    train split (after `max_train_rows`) when that is smaller."""
    return min(cfg.batch_size, rows_trained_on(cfg, train_rows))


def check_batch_norm(model: nn.Module, rows: int) -> None:
    """A model with BatchNorm layers (a baseline's `batch_norm: true`) cannot train on batches of
    one row: BatchNorm has no batch statistics there, and torch failed at the first step with a
    traceback ("Expected more than 1 value per channel when training")."""
    if rows == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError(
            "the model has BatchNorm layers (batch_norm: true), which need at least 2 rows per training batch, "
            "but each batch has 1 row (batch_size 1, or a train split of 1 row after max_train_rows): raise batch_size, or set batch_norm: false"
        )


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base lr at `step`: linear warmup, then constant/cosine/linear decay to 0."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
