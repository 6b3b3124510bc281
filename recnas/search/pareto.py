"""Pareto tools for multi-objective search (all objectives minimised), NSGA-II style.

`non_dominated_sort` ranks candidates into fronts, `crowding_distance` spreads selection
within a front, and `plot_front` draws accuracy-vs-cost trade-offs with the hand-designed
baselines marked, for the co-design report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recnas.errors import ConfigError
from recnas.search.plots import pyplot, save_figure


def _as_points(points) -> np.ndarray:
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ConfigError(f"points must be a 2-D array [n, objectives], got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ConfigError("points contain NaN or infinite objective values")
    return p


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """a is no worse in every objective and strictly better in one."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_sort(points) -> list[list[int]]:
    """Indices grouped into fronts: front 0 is non-dominated, front k is dominated only by fronts < k.
    Duplicate points share a front. O(m n^2) (fine for search populations)."""
    p = _as_points(points)
    n = len(p)
    le = np.all(p[:, None, :] <= p[None, :, :], axis=2)
    lt = np.any(p[:, None, :] < p[None, :, :], axis=2)
    dom = le & lt  # dom[i, j]: i dominates j
    count = dom.sum(0)  # how many dominate j
    fronts, current = [], [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in np.flatnonzero(dom[i]):
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(int(j))
        current = sorted(nxt)
    return fronts


def pareto_front(points) -> list[int]:
    """Indices of the non-dominated points."""
    p = _as_points(points)
    return non_dominated_sort(p)[0] if len(p) else []


def crowding_distance(points) -> np.ndarray:
    """NSGA-II crowding distance of each point *within the given set* (normally one front):
    sum over objectives of the normalised gap between its neighbours; extremes get inf."""
    p = _as_points(points)
    n, m = p.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(p[:, k], kind="stable")
        span = p[order[-1], k] - p[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span == 0:
            continue
        dist[order[1:-1]] += (p[order[2:], k] - p[order[:-2], k]) / span
    return dist


def plot_front(points, names, path, labels=None, baselines=None, title: str | None = None, front=None, front_label: str = "Pareto front") -> Path:
    """Scatter two objectives (`names` = axis labels), draw the Pareto front as a step line and
    mark `baselines` ({name: (x, y)}) with stars and labels; saves a PNG/PDF to `path`.

    `front`: indices of the points to mark as the front instead, e.g. the non-dominated set over
    more objectives than the two drawn (named by `front_label`); they are marked without the
    step line, which bounds a front of the two plotted objectives only."""
    plt = pyplot()
    p = _as_points(points)
    if p.shape[1] != 2 or len(names) != 2:
        raise ConfigError(f"plot_front draws two objectives, got {p.shape[1]} columns and names {list(names)}")
    if labels is not None and len(labels) != len(p):
        raise ConfigError(f"{len(labels)} labels for {len(p)} points")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(p[:, 0], p[:, 1], s=14, c="tab:gray", alpha=0.6, label="candidates")
    if front is None:
        front = sorted(pareto_front(p), key=lambda i: p[i, 0])
        ax.step(p[front, 0], p[front, 1], where="post", c="tab:blue", lw=1.5)
    else:
        front = [int(i) for i in front]
        if any(not 0 <= i < len(p) for i in front):
            raise ConfigError(f"front indices {front} out of range for {len(p)} points")
    ax.scatter(p[front, 0], p[front, 1], s=28, c="tab:blue", label=front_label, zorder=3)
    if labels is not None:
        for i in front:
            ax.annotate(str(labels[i]), p[i], fontsize=7, xytext=(3, 3), textcoords="offset points")
    for name, (x, y) in (baselines or {}).items():
        ax.scatter([x], [y], marker="*", s=140, c="tab:red", zorder=4)
        ax.annotate(name, (x, y), fontsize=8, color="tab:red", xytext=(4, -10), textcoords="offset points")
    if baselines:
        ax.scatter([], [], marker="*", s=80, c="tab:red", label="baselines")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)
