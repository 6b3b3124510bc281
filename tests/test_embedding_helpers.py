"""Planted data for the embedding-search tests: some fields carry signal, others are noise."""

from __future__ import annotations

import numpy as np

from recnas.data.schema import SPLITS, DatasetMeta
from recnas.data.store import CTRStore, SplitArrays, write_store


def make_planted_store(path, rows: int = 6000, vocab: int = 60, n_signal: int = 2, n_noise: int = 2, seed: int = 0, strength: float = 1.5) -> CTRStore:
    """Fields 0..n_signal-1 carry a first-order effect and a rank-4 pairwise interaction;
    the remaining n_noise fields are independent of the label."""
    rng = np.random.default_rng(seed)
    n_fields = n_signal + n_noise
    sparse = rng.integers(0, vocab, (rows, n_fields)).astype(np.int32)
    dense = rng.normal(size=(rows, 2)).astype(np.float32)
    latent = rng.normal(size=(n_signal, vocab, 4)) / 4**0.25
    first = rng.normal(size=(n_signal, vocab))
    logit = 0.5 * dense[:, 0]
    for f in range(n_signal):
        logit += first[f, sparse[:, f]]
        g = (f + 1) % n_signal
        logit += strength * np.einsum("nk,nk->n", latent[f, sparse[:, f]], latent[g, sparse[:, g]])
    label = (rng.random(rows) < 1 / (1 + np.exp(-(logit - 0.5)))).astype(np.float32)
    parts = np.split(np.arange(rows), [int(rows * 0.8), int(rows * 0.9)])
    splits = {s: SplitArrays(dense[i], sparse[i], label[i]) for s, i in zip(SPLITS, parts)}
    meta = DatasetMeta(
        name="planted-noise", dense_names=["I1", "I2"], cat_names=[f"{'S' if f < n_signal else 'N'}{f}" for f in range(n_fields)],
        vocab_sizes=[vocab] * n_fields, rows={},
    )
    write_store(path, splits, meta)
    return CTRStore(path)
