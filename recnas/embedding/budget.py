"""Embedding memory: parameter counts, user budgets and the resource-competition penalty.

Only the embedding *tables* count against the budget (sum_i vocab_i * w_i): they are what
grows with the data (millions of ids); the per-field projections and the backbone are
tiny and identical for every choice of widths, so they do not change the ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

from recnas.errors import ConfigError

BYTES_PER_PARAM = 4  # float32 tables
MIB = 2**20


def table_params(vocab_sizes: Sequence[int], widths: Sequence[int]) -> int:
    """sum_i vocab_i * w_i."""
    if len(vocab_sizes) != len(widths):
        raise ValueError(f"{len(widths)} widths for {len(vocab_sizes)} fields")
    return int(sum(int(v) * int(w) for v, w in zip(vocab_sizes, widths)))


def params_to_mib(params: int) -> float:
    return params * BYTES_PER_PARAM / MIB


def resolve_budget(vocab_sizes: Sequence[int], widths: Sequence[int], budget_params: int | None = None, budget_mb: float | None = None) -> int:
    """The budget in table parameters; exactly one of params / MiB (float32) must be given.

    Raises ConfigError when even the smallest candidate width for every field does not fit.
    """
    if (budget_params is None) == (budget_mb is None):
        raise ConfigError("give exactly one of --budget-params or --budget-mb")
    if budget_params is not None:
        if budget_params <= 0:
            raise ConfigError(f"--budget-params must be positive, got {budget_params}")
        budget = int(budget_params)
    else:
        if not 0 < budget_mb < float("inf"):
            raise ConfigError(f"--budget-mb must be a positive, finite number of MiB, got {budget_mb}")
        params = budget_mb * MIB / BYTES_PER_PARAM
        if params == float("inf"):  # a finite --budget-mb near the float limit: int() would overflow
            raise ConfigError(f"--budget-mb {budget_mb:g} is too large to count in parameters; give a realistic number of MiB")
        budget = int(params)
    floor = table_params(vocab_sizes, [min(widths)] * len(vocab_sizes))
    if budget < floor:
        raise ConfigError(
            f"embedding budget of {budget:,} parameters ({params_to_mib(budget):.3f} MiB) cannot be met: even width "
            f"{min(widths)} for every field needs {floor:,} ({params_to_mib(floor):.3f} MiB); raise the budget or add a smaller width"
        )
    return budget


def penalty(params: int, budget: int, weight: float) -> float:
    """Resource-competition penalty: weight * max(0, params / budget - 1).

    Zero at or under the budget, then linear in the relative overshoot (monotone), so a
    configuration 10% over budget loses 0.1 * weight of reward (log-loss units).
    """
    if budget <= 0:
        raise ValueError("budget must be positive")
    return float(weight) * max(0.0, params / budget - 1.0)


def parse_widths(text: str) -> tuple[int, ...]:
    """'2,4,8' -> (2, 4, 8), sorted and de-duplicated; ConfigError on anything else."""
    try:
        widths = sorted({int(t) for t in text.split(",")})  # an empty item ("2,,4") is a typo too
    except ValueError:
        raise ConfigError(f"--widths must be comma-separated positive integers, got {text!r}") from None
    if not widths or widths[0] <= 0:
        raise ConfigError(f"--widths must be comma-separated positive integers, got {text!r}")
    return tuple(widths)
