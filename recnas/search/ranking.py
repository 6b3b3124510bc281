"""Ranking by a loss that may not be a number. NaN logits give a NaN log loss (None once written
to JSON), and NaN compares false both ways: `min` or a sort on it returned or kept a diverged
model anywhere, ahead of the best one. Every ranking of models by a loss goes through here."""

from __future__ import annotations

import math


def is_score(value) -> bool:
    """A real score (inf included); not NaN nor None."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def nan_last(value) -> tuple[bool, float]:
    """Sort key: numbers in ascending order, then every value that is not one."""
    return (False, value) if is_score(value) else (True, 0.0)
