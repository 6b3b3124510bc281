"""Searched model vs every baseline under the same training budget, over several seeds.

Runs the main job (`recnas.search.pipeline.run_job`) once per seed and reports, per model, the
mean and spread of the test log loss and AUC, and for the synthetic benchmark how much of the
best baseline's gap to the Bayes-optimal log loss the searched model closes.

    python benchmarks/search_quality.py --budget cpu --rows 200000 --seeds 0,1
    python benchmarks/search_quality.py --budget gpu --data data/criteo --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime, timezone
from pathlib import Path

from recnas.configs import write_text_atomic
from recnas.search.job import load_job_config
from recnas.search.pipeline import run_job

NAS = "recnas (searched)"


def summarise(reports: list[dict]) -> dict:
    models = [m["model"] for m in reports[0]["models"]]
    table = {}
    for name in models:
        ll = [next(m for m in r["models"] if m["model"] == name)["test_logloss"] for r in reports]
        auc = [next(m for m in r["models"] if m["model"] == name)["test_auc"] for r in reports]
        table[name] = {"logloss_mean": statistics.fmean(ll), "logloss_std": statistics.pstdev(ll), "auc_mean": statistics.fmean(auc), "logloss": ll}
    baselines = {k: v for k, v in table.items() if k != NAS}
    best_name = min(baselines, key=lambda k: baselines[k]["logloss_mean"])
    out = {"models": table, "best_baseline": best_name, "beats_every_baseline": all(table[NAS]["logloss_mean"] < v["logloss_mean"] for v in baselines.values())}
    bayes = [r["bayes"]["test_logloss"] for r in reports if r.get("bayes")]
    if bayes:
        floor = statistics.fmean(bayes)
        gap = baselines[best_name]["logloss_mean"] - floor
        out["bayes_test_logloss"] = floor
        out["gap_closed"] = (baselines[best_name]["logloss_mean"] - table[NAS]["logloss_mean"]) / gap if gap > 0 else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="cpu")
    ap.add_argument("--rows", type=int, default=None, help="synthetic rows (default: the budget's)")
    ap.add_argument("--data", default=None, help="a prepared store instead of the synthetic benchmark")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--config", default=None, help="YAML overrides for the job")
    ap.add_argument("--out-dir", default="benchmarks/out/search_quality")
    args = ap.parse_args()
    reports = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = load_job_config(args.budget, args.config, seed=seed, synthetic_rows=args.rows, data=args.data)
        reports.append(run_job(cfg, Path(args.out_dir) / f"seed{seed}", progress=False))
    summary = summarise(reports)
    print(f"\n| model | test log loss (mean ± std over {len(reports)} seeds) | test AUC |\n|---|---|---|")
    for name, v in sorted(summary["models"].items(), key=lambda kv: kv[1]["logloss_mean"]):
        print(f"| {name} | {v['logloss_mean']:.4f} ± {v['logloss_std']:.4f} | {v['auc_mean']:.4f} |")
    if "gap_closed" in summary:
        print(f"\nBayes-optimal test log loss {summary['bayes_test_logloss']:.4f}; best baseline {summary['best_baseline']}; "
              f"searched model closes {100 * summary['gap_closed']:.0f}% of its gap; beats every baseline: {summary['beats_every_baseline']}")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args), "summary": summary, "reports": reports}
    path = Path(args.out_dir) / "search_quality.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=2, default=float))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
