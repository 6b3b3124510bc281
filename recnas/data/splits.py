"""Train/val/test assignment from the label column alone (1 byte per row in memory).

`stratified` follows the NASRec/AutoCTR convention: StratifiedKFold(10, shuffle=True,
random_state=seed) folds, 0-7 train, 8 val, 9 test. Within each class the fold labels
0..9 are dealt round-robin (continuing across classes) and then shuffled, so every fold
gets each class's rows, and rows in total, to within one row and the positive rate is the same in all three splits. (Same scheme as sklearn's,
not bit-identical row assignment.) `sequential` keeps file order: first 80% / next 10% /
last 10%, the honest choice when rows are in time order (Avazu, Criteo). `none` puts every
row into test (train and val stay empty): a store of new data to score, not to train on.
"""

from __future__ import annotations

import numpy as np

from recnas.errors import ConfigError

METHODS = ("stratified", "sequential", "none")
TRAIN, VAL, TEST = 0, 1, 2
N_FOLDS = 10
FOLD_TO_SPLIT = np.array([TRAIN] * 8 + [VAL, TEST], np.uint8)


def stratified(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 split index per row (0 train, 1 val, 2 test), stratified by label."""
    labels = np.asarray(labels)
    split = np.empty(len(labels), np.uint8)
    rng = np.random.default_rng(seed)
    start = 0  # continue the deal across classes so fold *totals* also differ by at most one
    for cls in np.unique(labels):
        mask = labels == cls
        count = int(mask.sum())
        folds = ((np.arange(count) + start) % N_FOLDS).astype(np.uint8)
        rng.shuffle(folds)
        split[mask] = FOLD_TO_SPLIT[folds]
        start += count
    return split


def sequential(n_rows: int) -> np.ndarray:
    """uint8 split index per row: first 80% train, next 10% val, last 10% test (file order)."""
    split = np.full(n_rows, TEST, np.uint8)
    split[: int(n_rows * 0.9)] = VAL
    split[: int(n_rows * 0.8)] = TRAIN
    return split


def assign(labels: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "stratified":
        return stratified(labels, seed)
    if method == "sequential":
        return sequential(len(labels))
    if method == "none":
        return np.full(len(labels), TEST, np.uint8)
    raise ConfigError(f"unknown split method {method!r}; expected one of {', '.join(METHODS)}")
