"""Searched model vs every baseline under the same training budget, over several seeds.

Runs the main job (`recnas.search.pipeline.run_job`) once per seed and reports, per model, the
mean and spread of the test log loss and AUC, and for the synthetic benchmark how much of the
best baseline's gap to the Bayes-optimal log loss the searched model closes. Per seed it says
whether the searched model meets issue #4's target there: it beats every baseline and closes at
least half of that seed's best baseline's gap to the Bayes-optimal log loss.

    python benchmarks/search_quality.py --budget cpu --rows 200000 --seeds 0,1
    python benchmarks/search_quality.py --budget gpu --data data/criteo --seeds 0,1,2
    python benchmarks/search_quality.py --budget gpu --config configs/search-gpu-1m-scratch.yaml --seeds 0,1,2,3 --jobs 4
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from datetime import datetime, timezone
from pathlib import Path

from recnas.configs import write_text_atomic
from recnas.scripts import failures, output_dir, positive_int, run_script, seed_list, side_by_side
from recnas.search.job import load_job_config
from recnas.search.pipeline import run_job

NAS = "recnas (searched)"


def _metric(report: dict, name: str, key: str = "test_logloss") -> float:
    return next(m for m in report["models"] if m["model"] == name)[key]


def seed_verdict(report: dict) -> dict:
    """One seed against the target: the searched model beats every baseline of this seed, and
    closes at least half of the best baseline's gap to this seed's Bayes-optimal log loss."""
    nas = _metric(report, NAS)
    baselines = {m["model"]: m["test_logloss"] for m in report["models"] if m["model"] != NAS}
    out = {"seed": report.get("seed"), "searched": nas}
    if not baselines:  # a job run with `baselines: []`: nothing to compare against
        return out
    best = min(baselines, key=baselines.get)
    out.update(best_baseline=best, best_baseline_logloss=baselines[best], beats_every_baseline=all(nas < v for v in baselines.values()))
    if report.get("bayes"):
        gap = baselines[best] - report["bayes"]["test_logloss"]
        out["gap_closed"] = (baselines[best] - nas) / gap if gap > 0 else float("nan")
        out["target_met"] = out["beats_every_baseline"] and out["gap_closed"] >= 0.5
    return out


def summarise(reports: list[dict]) -> dict:
    models = [m["model"] for m in reports[0]["models"]]
    table = {}
    for name in models:
        ll = [_metric(r, name) for r in reports]
        auc = [_metric(r, name, "test_auc") for r in reports]
        table[name] = {"logloss_mean": statistics.fmean(ll), "logloss_std": statistics.pstdev(ll), "auc_mean": statistics.fmean(auc), "logloss": ll}
    baselines = {k: v for k, v in table.items() if k != NAS}
    seeds = [seed_verdict(r) for r in reports]
    if not baselines:
        return {"models": table, "seeds": seeds}
    best_name = min(baselines, key=lambda k: baselines[k]["logloss_mean"])
    out = {"models": table, "best_baseline": best_name, "beats_every_baseline": all(table[NAS]["logloss_mean"] < v["logloss_mean"] for v in baselines.values()),
           "seeds": seeds, "beats_every_baseline_on_every_seed": all(v["beats_every_baseline"] for v in seeds)}
    bayes = [r["bayes"]["test_logloss"] for r in reports if r.get("bayes")]
    if bayes:
        floor = statistics.fmean(bayes)
        gap = baselines[best_name]["logloss_mean"] - floor
        out["bayes_test_logloss"] = floor
        out["gap_closed"] = (baselines[best_name]["logloss_mean"] - table[NAS]["logloss_mean"]) / gap if gap > 0 else float("nan")
        out["target_met"] = len(bayes) == len(reports) and all(v["target_met"] for v in seeds)
    return out


def _run_seed(budget: str, config: str | None, seed: int, rows: int | None, data: str | None, out_dir: str) -> dict:
    cfg = load_job_config(budget, config, seed=seed, synthetic_rows=rows, data=data)
    return {**run_job(cfg, Path(out_dir) / f"seed{seed}", progress=False), "seed": seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="cpu", help="the job's preset: smoke, cpu or gpu")
    ap.add_argument("--rows", type=positive_int, default=None, help="synthetic rows (default: the budget's)")
    ap.add_argument("--data", default=None, help="a prepared store instead of the synthetic benchmark")
    ap.add_argument("--seeds", type=seed_list, default="0,1", help="comma-separated, distinct")
    ap.add_argument("--config", default=None, help="YAML overrides for the job")
    ap.add_argument("--out-dir", type=output_dir, default=Path("benchmarks/out/search_quality"), help="one run folder per seed (seedN) and the summary, search_quality-seeds0-1.json (named by --seeds)")
    ap.add_argument("--jobs", type=positive_int, default=1, help="seeds run side by side, each in its own process (e.g. 4 on one GPU)")
    args = ap.parse_args()
    job = functools.partial(_run_seed, args.budget, args.config, rows=args.rows, data=args.data, out_dir=args.out_dir)
    if args.jobs > 1:
        done = {}
        failed = side_by_side(job, args.seeds, args.jobs, done=done.__setitem__)
        reports = [done[seed] for seed in args.seeds if seed in done]
    else:
        failed, reports = [], [job(seed) for seed in args.seeds]
    if reports:
        report(args, reports, missing=[seed for seed, _ in failed])
    if failed:  # each finished seed's job is in its run folder too, and a re-run loads it
        raise failures([exc for _, exc in failed], len(args.seeds), "seeds", f"the summary of the {len(reports)} finished is in {summary_path(args)}; " if reports else "")


def summary_path(args) -> Path:
    """search_quality-seeds0-1.json in --out-dir: named by its seeds, so a run of other seeds
    into the same folder writes its own summary, not over this one's (the seeds' run folders
    are kept side by side there, and a re-run of these seeds loads them)."""
    return Path(args.out_dir) / f"search_quality-seeds{'-'.join(map(str, args.seeds))}.json"


def report(args, reports: list[dict], missing: list[int]) -> None:
    """The tables on stdout and `summary_path`: every model's mean over the seeds that
    finished, each seed's verdict, and the seeds that failed (`missing`)."""
    summary = summarise(reports)
    print(f"\n| model | test log loss (mean ± std over {len(reports)} seeds) | test AUC |\n|---|---|---|")
    for name, v in sorted(summary["models"].items(), key=lambda kv: kv[1]["logloss_mean"]):
        print(f"| {name} | {v['logloss_mean']:.4f} ± {v['logloss_std']:.4f} | {v['auc_mean']:.4f} |")
    if "gap_closed" in summary:
        print(f"\nBayes-optimal test log loss {summary['bayes_test_logloss']:.4f}; best baseline {summary['best_baseline']}; "
              f"searched model closes {100 * summary['gap_closed']:.0f}% of its gap; beats every baseline: {summary['beats_every_baseline']}")
    print("\n| seed | searched | best baseline | beats every baseline | gap closed |\n|---|---|---|---|---|")
    for v in summary["seeds"]:
        closed = f"{100 * v['gap_closed']:.0f}%" if "gap_closed" in v else "-"
        best = f"{v['best_baseline']} {v['best_baseline_logloss']:.4f}" if "best_baseline" in v else "-"
        print(f"| {v['seed']} | {v['searched']:.4f} | {best} | {v.get('beats_every_baseline', '-')} | {closed} |")
    if "target_met" in summary:
        print(f"target (on every seed: beat every baseline, close half the best one's gap to Bayes) met: {summary['target_met']}")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "summary": summary, "reports": reports, "missing_seeds": missing}
    path = summary_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=2, default=float))
    print(f"-> {path}")


if __name__ == "__main__":
    run_script(main, out_option="--out-dir")
