"""Scoring candidates: inherit supernet weights and fine-tune briefly (NASRec), or train
briefly from scratch; then evaluate on validation.

Post-training fine-tuning (NASRec): each candidate is copied out of the supernet as a compact
subnet and trained for a few steps before scoring; the supernet itself is never modified,
so candidates can be scored in any order (or on other machines) with the same result.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import torch

from recnas.data.store import CTRStore
from recnas.errors import TrainingDiverged
from recnas.space.arch import Architecture
from recnas.space.spaces import SearchSpace


@dataclass(frozen=True)
class Genotype:
    """What the search varies: the architecture and, in co-design, a hardware configuration."""

    arch: Architecture
    hardware: Any = None  # a recnas.hardware PIMConfig (pydantic model) or None

    @property
    def hardware_json(self) -> str | None:
        return None if self.hardware is None else json.dumps(self.hardware.model_dump(), sort_keys=True)

    @property
    def key(self) -> str:
        if self.hardware is None:
            return self.arch.hash
        return f"{self.arch.hash}-{hashlib.sha1(self.hardware_json.encode()).hexdigest()[:8]}"


def cost_summary(c, hardware=None) -> dict:
    """FLOPs and parameter counts of `Costs` (and PIM energy/latency when a hardware config is
    given): the cost columns of a results row, for searched architectures and baselines alike."""
    out = {"flops": float(c.flops), "params": float(c.dense_params), "embedding_params": float(c.embedding_params)}
    if hardware is not None:
        from recnas.hardware import pim_cost

        r = pim_cost(c, hardware)
        seq = pim_cost(c, hardware, parallel=False)  # sequential sum: an upper bound, reported alongside
        out.update(energy=float(r.energy_pj), latency=float(r.latency_ns), latency_seq=float(seq.latency_ns), area=float(r.area_mm2), crossbars=float(r.crossbars), fits=bool(r.fits))
    return out


def architecture_costs(arch: Architecture, space: SearchSpace, meta, hardware=None) -> dict:
    """`cost_summary` of a NASRec subnet, counted analytically."""
    from recnas.hardware import count_costs

    return cost_summary(count_costs(arch, space, meta), hardware)


def model_costs(model, meta, hardware=None) -> dict:
    """`cost_summary` of any module (e.g. a baseline), by profiling one sample on the CPU."""
    from recnas.hardware import example_inputs, module_costs

    model = model.cpu()
    return cost_summary(module_costs(model, *example_inputs(model, 2, meta=meta)), hardware)


class CandidateEvaluator:
    """Callable `Genotype -> metrics dict`: the search's score of a candidate, its validation
    log loss on `eval_rows` rows. Deterministic for a given supernet and config, so candidates
    can be scored in any order or on other machines.

    Two ways to get there, one mechanism:
    - with a `supernet`: the candidate inherits its weights (a compact `Subnet`), fine-tuned
      by `train_cfg` if given (post-training fine-tuning, NASRec);
    - without one: the candidate is built afresh right after seeding with `train_cfg.seed`
      and trained by `train_cfg`, a short from-scratch budget (`scoring: scratch`). It costs
      a training run per candidate, but one epoch from scratch ranks architectures far better
      than inherited weights do (docs/benchmarks.md, rank correlation).
    """

    def __init__(self, space: SearchSpace, store: CTRStore, train_cfg=None, eval_rows: int | None = 20_000, device: str | torch.device = "cpu", supernet=None):
        if supernet is None and train_cfg is None:
            raise ValueError("a candidate scored without a supernet needs a training config")
        self.supernet, self.space, self.store = supernet, space, store
        self.train_cfg = train_cfg
        self.eval_rows = eval_rows
        self.device = torch.device(device)
        self.val = store.split("val")

    def subnet(self, geno: Genotype):
        from recnas.supernet import Subnet

        if self.supernet is None:
            from recnas.train.checkpoint import seed_everything

            seed_everything(self.train_cfg.seed)  # its initial weights depend on the seed alone, not on what ran before
        # scored without the space's CIN head, if it has one: the blocks are ranked on their own
        # and only the finalists train with the head (recnas/supernet/head.py)
        return Subnet.from_architecture(geno.arch, self.space.blocks_only(), self.store.meta, self.supernet).to(self.device)

    def __call__(self, geno: Genotype) -> dict:
        from recnas.hardware.quant import quantized
        from recnas.train import Trainer, evaluate

        costs = architecture_costs(geno.arch, self.space, self.store.meta, geno.hardware)
        model = self.subnet(geno)
        if self.train_cfg is not None:
            try:
                Trainer(model, self.train_cfg, self.store, progress=False).fit()
            except TrainingDiverged:  # one candidate that cannot train must not end a search of hundreds
                return {"logloss": math.inf, "auc": math.nan, "diverged": True, **costs}
        with quantized(model, geno.hardware):  # scored on the model's device: the training config may have moved it
            m = evaluate(model, self.val, max_rows=self.eval_rows)
        if m["rows"] and math.isnan(m["logloss"]):
            # NaN logits from finite weights (a fine-tune at too high an lr leaves weights whose
            # logits overflow): it was stored as NaN, unmarked, and `search show` listed its log loss as "-"
            return {"logloss": math.inf, "auc": math.nan, "diverged": True, **costs}
        return {"logloss": m["logloss"], "auc": m["auc"], **costs}
