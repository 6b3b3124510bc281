"""The rank-correlation study behind `recnas study rank`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from recnas import configs
from recnas.data.store import CTRStore
from recnas.errors import ConfigError
from recnas.search.evaluator import Genotype, SupernetEvaluator
from recnas.search.rank import rank_correlation, scatter_plot
from recnas.space.samplers import random_architecture
from recnas.train.config import TrainConfig


class RankStudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    finetune: TrainConfig = Field(default_factory=lambda: TrainConfig(batch_size=512, max_steps=20, lr=5e-4, eval_every=0, restore_best=False))
    scratch: TrainConfig = Field(default_factory=lambda: TrainConfig(batch_size=512, epochs=1, lr=2e-3))
    eval_rows: int | None = Field(20_000, ge=1)
    seed: int = 0

    @classmethod
    def load(cls, path: str | Path | None) -> "RankStudyConfig":
        return cls() if path is None else configs.load(cls, path)


def run_rank_study(supernet_path, data, n: int, out, cfg: RankStudyConfig, progress: bool = True) -> dict:
    from recnas.space import SearchSpace
    from recnas.supernet import Subnet
    from recnas.train import Trainer, evaluate
    from recnas.train.model_factory import check_data, load_trained

    store = CTRStore(data)
    supernet, spec, _ = load_trained(supernet_path)
    if spec.get("kind") != "supernet":
        raise ConfigError(f"{supernet_path}: holds a {spec.get('kind')} model, not a supernet")
    check_data(spec, store.meta, str(data))
    space = SearchSpace(**spec["space"])
    rng = np.random.default_rng(cfg.seed)
    archs = list({a.hash: a for a in (random_architecture(rng, space) for _ in range(n))}.values())
    plain = SupernetEvaluator(supernet, space, store, None, cfg.eval_rows)
    tuned = SupernetEvaluator(supernet, space, store, cfg.finetune, cfg.eval_rows)
    val = store.split("val")
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("subnets", total=len(archs))
        for arch in archs:
            g = Genotype(arch)
            scratch_model = Subnet(arch, space, store.meta)
            Trainer(scratch_model, cfg.scratch, store, progress=False).fit()
            rows.append({
                "arch": arch.hash,
                "inherited": plain(g)["logloss"],
                "finetuned": tuned(g)["logloss"],
                "scratch": evaluate(scratch_model, val, max_rows=cfg.eval_rows)["logloss"],
            })
            bar.advance(task)
    scratch = [r["scratch"] for r in rows]
    corr = {name: rank_correlation([r[name] for r in rows], scratch) for name in ("inherited", "finetuned")}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"n": len(rows), "correlation": corr, "rows": rows, "config": json.loads(cfg.model_dump_json())}
    (out / "rank_study.json").write_text(json.dumps(result, indent=2))
    scatter_plot(out / "rank_study.png", scratch, {name: [r[name] for r in rows] for name in ("inherited", "finetuned")})
    return result
