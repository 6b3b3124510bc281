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


def test_report_prints_bracketed_field_names_as_they_are():
    """Field names come from the user's data spec: rich markup used to swallow `price[usd]`."""
    from rich.console import Console

    from recnas.embedding.report import print_report

    report = {"fields": ["price[usd]", "[b]city"], "vocab_sizes": [10, 20], "emb_dims": [2, 4], "params": 100, "mib": 0.1,
              "budget_params": 200, "budget_mib": 0.2, "budget_used": 0.5,
              "stability": {"seeds": 1, "per_field": [{"agreement": 1.0}, {"agreement": 1.0}], "overall_agreement": 1.0}}
    console = Console(record=True, width=200)
    print_report(report, console)
    text = console.export_text()
    assert "price[usd]" in text and "[b]city" in text and "50.0% used" in text
    console = Console(record=True, width=200)
    print_report({**report, "budget_used": 0.9995}, console)  # under the budget: read "100.0% used", as if full
    assert "99.9% used" in console.export_text()


def test_report_gives_the_seed_agreement_of_the_width_it_shows():
    """Three seeds that each spent the budget on two of three fields agree on the wide width
    for every field, which the budget then repairs: the table printed "100%" beside a width no
    seed had chosen."""
    from rich.console import Console

    from recnas.embedding.report import print_report

    per_field = [{"field": f, "modal_width": 16, "agreement": 2 / 3, "widths": w} for f, w in (("a", [16, 16, 2]), ("b", [16, 2, 16]), ("c", [2, 16, 16]))]
    report = {"fields": ["a", "b", "c"], "vocab_sizes": [10, 10, 10], "emb_dims": [16, 16, 2], "params": 340, "mib": 0.001,
              "budget_params": 340, "budget_mib": 0.001, "budget_used": 1.0, "stability": {"seeds": 3, "per_field": per_field, "overall_agreement": 2 / 3}}
    console = Console(record=True, width=200)
    print_report(report, console)
    rows = {line.split("│")[1].strip(): line.split("│")[-2].strip() for line in console.export_text().splitlines() if line.count("│") == 6}
    assert rows == {"a": "67%", "b": "67%", "c": "33%"}
