"""Figures of the search's outputs: matplotlib without a display, written atomically."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from recnas.configs import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend: servers and CI have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _wrap_long_labels(fig) -> bool:
    """Wrap each axis label that runs past the figure's edge onto lines no longer than its axis;
    True when one was. `tight_layout` makes room beside a label, not along it: the y label of
    a penalized search's progress plot ("score (validation log loss + beta * cost penalty,
    supernet weights)") was cut off at both ends."""
    renderer = fig.canvas.get_renderer()
    wrapped = False
    for ax in fig.axes:
        for label, vertical in ((ax.yaxis.label, True), (ax.xaxis.label, False)):
            text, ext, room = label.get_text(), label.get_window_extent(renderer), ax.get_window_extent(renderer)
            lo, hi, size, length = (ext.y0, ext.y1, fig.bbox.height, room.height) if vertical else (ext.x0, ext.x1, fig.bbox.width, room.width)
            if text and (lo < 0 or hi > size):
                label.set_text(textwrap.fill(text.replace("\n", " "), max(10, int(len(text) * length / (hi - lo)))))
                wrapped = True
    return wrapped


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out `fig` (wrapping axis labels too long for it), write it through `atomic_write`
    (the format follows the suffix, PNG without one) and close it, so a kill mid-save never
    leaves a truncated plot."""
    path = Path(path)
    fig.tight_layout()
    if _wrap_long_labels(fig):
        fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    pyplot().close(fig)
    return path
