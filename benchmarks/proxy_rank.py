"""How well does a short from-scratch training rank architectures? (why finalists are halved)

Trains N random subnets of a budget's space from scratch with the budget's final training
config, records each one's validation log loss after every evaluation interval (an epoch by
default), and reports Kendall's tau and Spearman's rho between the best score within the first
k intervals (what successive halving ranks finalists by) and the best score of the whole run.
Compare with the supernet's own ranking on the same data: `recnas study rank`
(docs/benchmarks.md).

    python benchmarks/proxy_rank.py --budget cpu --seed 0 --n 30
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from recnas.configs import write_text_atomic
from recnas.scripts import output_dir, output_file, provenance, run_script
from recnas.search.job import load_job_config
from recnas.search.rank import rank_correlation


def proxy_table(histories: dict[str, list[float]]) -> list[dict]:
    """Per interval k: correlation of every run's best score within its first k intervals (what
    halving ranks finalists by, `recnas.search.finalists.rung_score`) with its best score overall.
    A run that stopped early keeps its best for later k."""
    best = {key: min(h) for key, h in histories.items()}
    keys = sorted(histories)
    rows = []
    for k in range(1, max(len(h) for h in histories.values()) + 1):
        after_k = [min(histories[key][:k]) for key in keys]
        corr = rank_correlation(after_k, [best[key] for key in keys])
        rows.append({"intervals": k, "kendall_tau": corr["kendall_tau"], "spearman": corr["spearman"], "n": len(keys)})
    return rows


def main() -> None:
    from recnas.search.evaluator import CandidateEvaluator, Genotype
    from recnas.search.pipeline import prepare_data
    from recnas.space import get_space
    from recnas.space.samplers import distinct_random_architectures
    from recnas.train import Trainer
    from rich.console import Console

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="cpu", help="the job's preset: smoke, cpu or gpu")
    ap.add_argument("--config", default=None, help="YAML overrides for the job config")
    ap.add_argument("--seed", type=int, default=0, help="data seed (and job seed)")
    ap.add_argument("--n", type=int, default=30, help="random subnets")
    ap.add_argument("--out", type=output_file, default="benchmarks/out/proxy_rank.json", help="the result JSON")
    ap.add_argument("--runs", type=output_dir, default="benchmarks/out/runs", help="where the synthetic data is cached")
    args = ap.parse_args()
    if args.n < 3:
        ap.error("--n must be at least 3")
    cfg = load_job_config(args.budget, args.config, seed=args.seed)
    store = prepare_data(cfg, Path(args.runs) / "proxy", Console(stderr=True))
    space = get_space(cfg.space, **cfg.space_overrides)
    archs = distinct_random_architectures(0, space, args.n)  # the same draws as `recnas study rank` (its seed 0)
    # each subnet built as `scoring: scratch` builds a candidate (its init seeded by the training
    # config's seed alone); trained here by Trainer directly, for its per-epoch history
    build = CandidateEvaluator(space, store, cfg.final, eval_rows=None).subnet
    histories, t0 = {}, time.perf_counter()
    for i, arch in enumerate(archs, 1):
        trainer = Trainer(build(Genotype(arch)), cfg.final, store, progress=False)
        trainer.fit()
        histories[arch.hash] = [h["val_logloss"] for h in trainer.history]
        print(f"[{i}/{len(archs)}] {arch.hash}: " + " ".join(f"{v:.4f}" for v in histories[arch.hash]), flush=True)
    rows = proxy_table(histories)
    print("\n| intervals trained | Kendall tau | Spearman rho | n |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['intervals']} | {r['kendall_tau']:+.2f} | {r['spearman']:+.2f} | {r['n']} |")
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget": args.budget, "seed": args.seed,
        "final": cfg.final.model_dump(mode="json"), "rows": rows, "histories": histories, "seconds": time.perf_counter() - t0,
    }
    import torch

    provenance(result, args, "cuda" if cfg.final.device != "cpu" and torch.cuda.is_available() else "cpu")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_script(main, out_option="--runs")
