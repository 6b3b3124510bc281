"""Search objectives: log loss alone, log loss plus cost penalties, or a Pareto front.

Penalised score (NASRec's latency-penalised form, with a hinge so models under target are
not rewarded for being smaller): score = logloss + sum_c beta_c * max(0, cost_c/target_c - 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

COSTS = ("flops", "params", "energy", "latency")


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["loss", "penalized", "pareto"] = "loss"
    targets: dict[Literal["flops", "params", "energy", "latency"], float] = Field(default_factory=dict)
    beta: float = Field(0.1, ge=0)
    pareto_costs: tuple[str, ...] = ("energy", "latency", "flops")

    def score(self, metrics: dict) -> float:
        """Lower is better. In pareto mode this is the tie-break inside a front."""
        s = float(metrics["logloss"])
        if self.kind == "penalized":
            for cost, target in self.targets.items():
                if cost in metrics and target > 0:
                    s += self.beta * max(0.0, metrics[cost] / target - 1.0)
        return s

    def vector(self, metrics: dict) -> list[float]:
        """The minimised objective vector for Pareto selection."""
        return [float(metrics["logloss"])] + [float(metrics.get(c, 0.0)) for c in self.pareto_costs]
