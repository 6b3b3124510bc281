"""Search objectives: log loss alone, log loss plus cost penalties, or a Pareto front.

Penalised score (NASRec's latency-penalised form, with a hinge so models under target are
not rewarded for being smaller): score = logloss + sum_c beta_c * max(0, cost_c/target_c - 1).
Targets are given directly, or relative to a hand-designed baseline ("R times cheaper than
DLRM"): `reference` + `ratios`, resolved against the dataset by `resolve_targets`.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recnas.errors import ConfigError

Cost = Literal["flops", "params", "energy", "latency"]
COSTS: tuple[str, ...] = get_args(Cost)


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["loss", "penalized", "pareto"] = "loss"
    targets: dict[Cost, float] = Field(default_factory=dict)
    beta: float = Field(0.1, ge=0)
    pareto_costs: tuple[Cost, ...] = ("energy", "latency", "flops")
    reference: str | None = Field(None, description="penalized: a baseline whose costs, divided by `ratios`, become the targets")
    ratios: dict[Cost, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _reference(self):
        # a target that is not positive: `score` used to skip it silently
        bad = {k: v for k, v in self.targets.items() if not v > 0}
        if bad:
            raise ValueError(f"targets must be positive, got {bad}")
        if self.kind == "pareto" and not self.pareto_costs:  # a front over log loss alone: it searched as `kind: loss`, silently
            raise ValueError("kind: pareto needs at least one cost in pareto_costs (e.g. [flops, params]); for log loss alone use kind: loss")
        if len(set(self.pareto_costs)) < len(self.pareto_costs):  # a cost counted twice in the front
            raise ValueError(f"pareto_costs names a cost more than once, got {list(self.pareto_costs)}")
        if self.targets and self.kind != "penalized":  # only `penalized` reads them: they were silently ignored
            raise ValueError(f"cost targets need kind: penalized (kind {self.kind} does not use them), got targets {dict(self.targets)}")
        if self.reference is None:
            if self.ratios:
                raise ValueError("ratios need a reference baseline (objective.reference)")
            if self.kind == "penalized" and not self.targets:  # it used to search on log loss alone, silently
                raise ValueError("kind: penalized needs cost targets (e.g. targets: {flops: 2.0e6}) or a reference baseline with ratios")
            return self
        from recnas.baselines import BASELINES

        if self.reference not in BASELINES:
            raise ValueError(f"reference must be one of {', '.join(BASELINES)}, got {self.reference!r}")
        if self.kind != "penalized" or not self.ratios:
            raise ValueError("a reference baseline needs kind: penalized and at least one ratio (e.g. ratios: {flops: 2})")
        bad = {k: v for k, v in self.ratios.items() if not v > 0}
        if bad:
            raise ValueError(f"ratios must be positive, got {bad}")
        return self

    def score(self, metrics: dict) -> float:
        """Lower is better. In pareto mode it is the log loss: parents are chosen by front and
        crowding distance (`RegularizedEvolution._select`), and this score ranks the finalists
        and gives each generation's best and mean (search_progress.png). A log loss that
        is not a number (NaN logits) scores inf, as a diverged candidate does: NaN compares
        false both ways, so it used to win `min` when it came first, and failed the store of the
        generation's best and mean score with a SQLite traceback."""
        s = float(metrics["logloss"])
        if math.isnan(s):
            return math.inf
        if self.kind == "penalized":
            for cost, target in self.targets.items():
                s += self.beta * max(0.0, _cost(metrics, cost) / target - 1.0)
        return s

    def vector(self, metrics: dict) -> list[float]:
        """The minimised objective vector for Pareto selection."""
        return [float(metrics["logloss"])] + [_cost(metrics, c) for c in self.pareto_costs]


def _cost(metrics: dict, cost: str) -> float:
    """A candidate's `cost`, which the objective ranks by. A missing one was taken as 0 (a Pareto
    front over PIM energy without co-design ranked it as free) or its target skipped: the job
    refuses such a config when it loads, a Python caller of the evolution met it silently."""
    if cost not in metrics:
        hint = " (energy and latency are computed in co-design only: hardware pim)" if cost in ("energy", "latency") else ""
        raise ConfigError(f"the objective ranks by {cost}, which the candidate's metrics do not hold{hint}; they hold {', '.join(sorted(metrics))}")
    return float(metrics[cost])


def format_targets(targets: dict[str, float]) -> str:
    """Cost targets as the job's log and results.md give them: a target under 1 (a reference
    with few parameters over a large ratio) printed as 0 with the thousands format alone."""
    return ", ".join(f"{k} {v:,.0f}" if v >= 100 else f"{k} {v:.4g}" for k, v in targets.items())


def diverged_keys(candidates: list[dict]) -> set[str]:
    """The candidates whose scoring diverged: they score inf (NaN logits: NaN), which the
    job's warning and results.md both count."""
    return {c["key"] for c in candidates if not math.isfinite(c["logloss"])}


def reference_costs(name: str, meta, hparams: dict | None = None) -> dict[str, float]:
    """FLOPs and dense parameters of baseline `name` on this dataset, and its PIM energy and
    latency on the default PIM configuration (where the baselines are mapped): the same
    numbers as the baseline's row in the results table."""
    from recnas.baselines import build_baseline
    from recnas.hardware import PIMConfig
    from recnas.search.evaluator import model_costs

    costs = model_costs(build_baseline(name, meta, **(hparams or {})), meta, PIMConfig())
    return {k: costs[k] for k in COSTS}


def resolve_targets(objective: Objective, meta, hparams: dict | None = None) -> Objective:
    """`objective` with `targets` filled from its reference baseline (explicit targets win)."""
    if objective.reference is None:
        return objective
    ref = reference_costs(objective.reference, meta, hparams)
    # a target of 0 cannot be met, and `score` skips it: the search ran on log loss alone (e.g.
    # reference lr, whose FLOPs are 0 on data without numeric features)
    zero = [k for k in objective.ratios if k not in objective.targets and not ref[k] > 0]
    if zero:
        from recnas.errors import ConfigError

        raise ConfigError(
            f"objective.reference {objective.reference} has no {' or '.join(zero)} on this dataset ({', '.join(f'{k} {ref[k]:g}' for k in zero)}), "
            "so no target can be derived from it: choose another reference, or give those costs as targets"
        )
    targets = {k: ref[k] / r for k, r in objective.ratios.items()}
    return objective.model_copy(update={"targets": {**targets, **objective.targets}})
