"""Figures of the search's outputs: matplotlib without a display, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from recnas.configs import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend: servers and CI have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out `fig`, write it through `atomic_write` (the format follows the suffix, PNG
    without one) and close it, so a kill mid-save never leaves a truncated plot."""
    path = Path(path)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    pyplot().close(fig)
    return path
