"""Rank correlation between supernet scores and from-scratch training.

Does the supernet rank architectures the way training from scratch does? Kendall's tau and
Spearman's rho (scipy) over N random subnets answer it; the study compares supernet scores
with and without post-training fine-tuning.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import kendalltau, spearmanr

from recnas.search.plots import pyplot, save_figure
from recnas.train.metrics import format_metric


def rank_correlation(a, b) -> dict:
    """Kendall tau and Spearman rho of two score lists (NaN-free pairs only)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"score lists differ in length: {x.shape[0]} vs {y.shape[0]}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"kendall_tau": math.nan, "spearman": math.nan, "n": int(len(x))}
    return {"kendall_tau": float(kendalltau(x, y).statistic), "spearman": float(spearmanr(x, y).statistic), "n": int(len(x))}


def scatter_plot(path, scratch, scores: dict[str, list[float]]) -> None:
    """One scatter per scoring method against the from-scratch log loss."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for (name, s), marker in zip(scores.items(), "os^D"):
        r = rank_correlation(s, scratch)
        tau, rho = (format_metric(r[k], "{:.2f}") for k in ("kendall_tau", "spearman"))  # n/a, not "nan", where undefined
        ax.scatter(scratch, s, marker=marker, alpha=0.75, label=f"{name} (tau={tau}, rho={rho})")
    ax.set_xlabel("from-scratch validation log loss")
    ax.set_ylabel("supernet validation log loss")
    ax.set_title("supernet vs from-scratch")
    ax.legend(fontsize=8)
    save_figure(fig, path)
