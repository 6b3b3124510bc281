"""Per-field width samplers for embedding-supernet training: uniform and adaptive.

Adaptive sampling (our reading of AdaS&S): a width whose training loss is still falling
needs more updates than one whose loss has settled. For every (field, width) we keep a fast
and a slow exponential moving average of the batch loss observed when that width was drawn
for that field. Their gap, relative to the slow average, measures "still improving":

    gap[f, k] = max(0, (slow - fast) / slow)
    p[f, :]   = floor * uniform + (1 - floor) * gap[f, :] / sum_k gap[f, k]

(uniform when no width of a field is improving). The floor keeps every width trained. A
width that has been drawn rarely sees a stale slow average and so looks "improving" when it
is drawn again, which also pulls neglected widths back in.
"""

from __future__ import annotations

import numpy as np


class WidthSampler:
    """Draws one candidate index per field each step; `adaptive=False` is plain uniform."""

    def __init__(self, n_fields: int, n_choices: int, adaptive: bool = True, seed: int = 0, fast: float = 0.2, slow: float = 0.02, floor: float = 0.5, warmup: int = 20):
        if not (0 < slow < fast <= 1):
            raise ValueError("need 0 < slow < fast <= 1")
        if not 0 <= floor <= 1:
            raise ValueError("floor must be in [0, 1]")
        self.n_fields, self.n_choices, self.adaptive = n_fields, n_choices, adaptive
        self.fast_rate, self.slow_rate, self.floor, self.warmup = fast, slow, floor, warmup
        self.rng = np.random.default_rng(seed)
        self.fast = np.zeros((n_fields, n_choices))
        self.slow = np.zeros((n_fields, n_choices))
        self.count = np.zeros((n_fields, n_choices), dtype=np.int64)

    def probs(self) -> np.ndarray:
        """[F, K] sampling distribution for the next step."""
        uniform = np.full((self.n_fields, self.n_choices), 1.0 / self.n_choices)
        if not self.adaptive:
            return uniform
        ready = self.count >= self.warmup
        gap = np.where(ready, np.clip((self.slow - self.fast) / np.maximum(self.slow, 1e-12), 0.0, None), 0.0)
        total = gap.sum(1, keepdims=True)
        share = np.divide(gap, total, out=uniform.copy(), where=total > 0)
        return self.floor * uniform + (1.0 - self.floor) * share

    def sample(self) -> np.ndarray:
        """[F] candidate indices (inverse-CDF draw per field: one vectorised step)."""
        cdf = np.cumsum(self.probs(), 1)
        u = self.rng.random((self.n_fields, 1))
        return np.minimum((u > cdf).sum(1), self.n_choices - 1)

    def update(self, choice: np.ndarray, loss: float) -> None:
        """Record the batch loss of the widths drawn for this step."""
        rows = np.arange(self.n_fields)
        first = self.count[rows, choice] == 0
        for avg, rate in ((self.fast, self.fast_rate), (self.slow, self.slow_rate)):
            old = avg[rows, choice]
            avg[rows, choice] = np.where(first, loss, old + rate * (loss - old))
        self.count[rows, choice] += 1

    def state_dict(self) -> dict:
        """The sampler's statistics and RNG state, for a checkpoint (`load_state_dict` restores them)."""
        return {"fast": self.fast.copy(), "slow": self.slow.copy(), "count": self.count.copy(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned: the next draws are the ones the saved sampler would make."""
        self.fast, self.slow, self.count = np.array(state["fast"]), np.array(state["slow"]), np.array(state["count"])
        self.rng.bit_generator.state = state["rng"]
