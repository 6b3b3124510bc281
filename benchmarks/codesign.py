"""Model-hardware co-design vs the best hand-designed baseline on a default PIM config.

Two ways to search, both the main job with `hardware: pim`:
- `--objective penalized` (default): the user's question "a model at least R times cheaper
  than REFERENCE": the search's cost targets are the reference baseline's FLOPs, PIM energy
  and PIM latency on the default PIM configuration divided by `--ratios` (default: the TORS
  paper's 2x FLOPs, 1.8x energy, 1.5x latency), and the job's winner is the result;
- `--objective pareto`: the Pareto front of (log loss, energy, latency, FLOPs); the cheapest
  front candidates whose supernet score is close to the best, plus the best-scored one, are
  retrained from scratch.
Every model's test log loss is taken as it runs on its own PIM configuration (simulated
quantisation, recnas.hardware.quant): a co-designed candidate at 4-bit weights is trained
quantisation-aware and judged at 4 bits, the baselines (trained in full precision) at the
default configuration's 8 bits. Reported: for the cheapest candidate whose test log loss is
equal or better than the best baseline's, FLOPs, PIM energy and PIM latency (critical path;
the sequential sum alongside) as ratios baseline / co-designed (> 1 = better); when none is,
the same ratios of the lowest-loss candidate against every baseline it does match
(`ratios_to_matched` in the result JSON, printed). The JSON is named by the objective and its
options (codesign-penalized-dlrm-ratios2-1.8-1.5-beta1.json by default), so runs of other
objectives into the same --out-dir, which share its search, keep their own.

    python benchmarks/codesign.py --budget cpu
    python benchmarks/codesign.py --budget gpu --config configs/codesign-gpu-1m.yaml
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from recnas.configs import validate, write_text_atomic
from recnas.errors import ConfigError
from recnas.hardware import PIMConfig
from recnas.hardware.quant import quantized
from recnas.scripts import output_dir, provenance, run_script
from recnas.search.evaluator import architecture_costs
from recnas.search.job import JobConfig, load_job_config
from recnas.search.objective import reference_costs
from recnas.search.fitting import fit_or_load
from recnas.search.pipeline import prepare_data, run_job
from recnas.space import Architecture, get_space
from recnas.supernet import Subnet
from recnas.train import evaluate
from recnas.train.model_factory import subnet_spec

COSTS = ("flops", "energy", "latency")
REPORTED = (*COSTS, "latency_seq")  # the critical-path latency, and the sequential sum alongside


def cost_ratios(baseline: dict, candidate: dict) -> dict[str, float]:
    """baseline / candidate for every reported cost (> 1 = the candidate is cheaper)."""
    return {k: baseline[k] / candidate[k] for k in REPORTED}


def ratios_to_matched(candidate: dict, baselines: list[dict]) -> dict[str, dict[str, float]]:
    """`cost_ratios` against every baseline whose test log loss the candidate equals or beats.
    Why: when the best baseline stays ahead, the user still learns what the co-designed model
    saves against the ones it beats."""
    return {b["model"]: cost_ratios(b, candidate) for b in baselines if candidate["test_logloss"] <= b["test_logloss"]}


def candidate_row(key: str, arch: Architecture, hw: PIMConfig, space, meta, test: float, test_full: float) -> dict:
    costs = architecture_costs(arch, space, meta, hw)
    return {"key": key, "test_logloss": test, "test_logloss_full_precision": test_full, **{k: costs[k] for k in REPORTED}, "hardware": hw.model_dump()}


def with_objective(cfg: JobConfig, source: str, **objective) -> JobConfig:
    """`cfg` with these keys of its objective replaced, checked as the job checks a config
    (`model_copy` checks nothing: a ratio of 0 divided by zero, a negative one was searched
    with and written into the run folder's config.yaml, which no later run could then read)."""
    data = cfg.model_dump(mode="json")
    data["objective"] = {**data["objective"], **objective}
    return validate(JobConfig, data, source)


def result_name(args) -> str:
    """The result JSON's name: the objective and its options. The job's run folder is shared
    by every objective (a search's scores do not depend on it), so a pareto run, or one with
    other --ratios, into the folder of a penalized run is allowed, and wrote over its
    codesign.json."""
    if args.objective == "penalized":
        return f"codesign-penalized-{args.reference}-ratios{'-'.join(f'{r:g}' for r in args.ratios)}-beta{args.beta:g}.json"
    return f"codesign-pareto-retrain{args.retrain}-tolerance{args.tolerance:g}.json"


def cost_table(baselines: list[dict], trained: list[dict], best: dict) -> str:
    """Every baseline (best loss first) and co-designed candidate as a Markdown table, with the
    numbers the JSON holds (`baselines`, `candidates`)."""
    rows = [(f"baseline {m['model']}" + (" (best)" if m is best else ""), m) for m in sorted(baselines, key=lambda m: m["test_logloss"])]
    rows += [(f"co-designed {t['key']}", t) for t in trained]
    lines = ["| model | test log loss on PIM | full precision | FLOPs | energy pJ | latency ns | sequential ns |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {m['test_logloss']:.4f} | {m['test_logloss_full_precision']:.4f} | {m['flops']:,.0f} | {m['energy']:,.0f} | {m['latency']:,.0f} | {m['latency_seq']:,.0f} |" for name, m in rows]
    return "\n".join(lines)


def retrain_front(out: Path, cfg, store, space, retrain: int, tolerance: float) -> list[dict]:
    """Pareto mode: train the cheapest near-best front candidates (and the best-scored one) from scratch."""
    front = json.loads((out / "run" / "pareto.json").read_text())
    best_row = min(front, key=lambda r: r["logloss"])  # the job's own winner: always on the front
    close = [r for r in front if r["logloss"] <= best_row["logloss"] + tolerance][:retrain]  # sorted by energy
    if best_row not in close:
        close.append(best_row)
    db = sqlite3.connect(out / "run" / "search.sqlite")
    rows = []
    for r in close:
        arch_json, hw_json = db.execute("SELECT arch, hardware FROM candidates WHERE key = ?", (r["key"],)).fetchone()
        arch, hw = Architecture.model_validate_json(arch_json), PIMConfig.model_validate_json(hw_json)
        model, _ = fit_or_load(lambda: (Subnet(arch, space, store.meta), subnet_spec(arch, space, store.meta)), cfg.final, store, out / "retrain" / r["key"], False, hardware=hw)
        full = evaluate(model, store.split("test"))["logloss"]
        with quantized(model, hw):
            test = evaluate(model, store.split("test"))["logloss"]
        rows.append(candidate_row(r["key"], arch, hw, space, store.meta, test, full))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="The result JSON in --out-dir is named by the objective and its options.")
    ap.add_argument("--budget", default="cpu", help="the job's preset: smoke, cpu or gpu")
    ap.add_argument("--config", default=None, help="YAML overrides for the job (e.g. configs/codesign-gpu-1m.yaml)")
    ap.add_argument("--rows", type=int, default=None, help="synthetic rows (default: the budget's)")
    ap.add_argument("--seed", type=int, default=None, help="data and job seed (default: the budget's)")
    ap.add_argument("--objective", choices=("penalized", "pareto"), default="penalized", help="penalized: cost targets from --reference and --ratios; pareto: retrain the cheapest near-best front candidates")
    ap.add_argument("--reference", default="dlrm", help="penalized: the baseline whose costs set the targets")
    ap.add_argument("--ratios", type=float, nargs=3, default=[2.0, 1.8, 1.5], metavar=("FLOPS", "ENERGY", "LATENCY"), help="penalized: targets = reference cost / ratio")
    ap.add_argument("--beta", type=float, default=1.0, help="penalized: weight of a relative excess over a target")
    ap.add_argument("--retrain", type=int, default=3, help="pareto: front candidates to train from scratch")
    ap.add_argument("--tolerance", type=float, default=0.01, help="pareto: val log loss slack over the front's best")
    ap.add_argument("--out-dir", type=output_dir, default=Path("benchmarks/out/codesign"), help="the job's run folder (run/), the retrained front (retrain/) and the result JSON")
    args = ap.parse_args()
    if args.retrain < 0 or not 0 <= args.tolerance < float("inf"):
        ap.error(f"--retrain and --tolerance must be >= 0 (got {args.retrain}, {args.tolerance})")
    out = Path(args.out_dir)
    cfg = load_job_config(args.budget, args.config, hardware="pim", synthetic_rows=args.rows, seed=args.seed)
    if not set(cfg.baselines) - {"lr"}:  # checked before the job: the comparison is the result
        raise ConfigError(f"{args.config or f'budget {args.budget!r}'}: baselines {cfg.baselines} has no hand-designed baseline (lr is not one) to compare the co-designed model with")
    if args.objective == "penalized":  # the job resolves the targets: reference cost / ratio
        cfg = with_objective(cfg, "--ratios/--beta/--reference", kind="penalized", reference=args.reference, ratios=dict(zip(COSTS, args.ratios)), beta=args.beta)
    else:
        cfg = with_objective(cfg, "--objective pareto", kind="pareto")
    store = prepare_data(cfg, out / "run", Console(quiet=True))
    space = get_space(cfg.space, **cfg.space_overrides)
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # when the job began; provenance adds the arguments
    if args.objective == "penalized":
        result["reference_costs"] = reference_costs(args.reference, store.meta, cfg.baseline_hparams.get(args.reference, {}))
    report = run_job(cfg, out / "run", progress=False)
    if args.objective == "penalized":
        result["targets"] = report["objective"]["targets"]
        print("targets (" + args.reference + " / ratios): " + ", ".join(f"{k} {v:,.0f}" for k, v in result["targets"].items()))
        searched = report["models"][0]
        arch, hw = Architecture.model_validate(report["best_arch"]), PIMConfig.model_validate(report["best_hardware"])
        trained = [candidate_row(arch.hash, arch, hw, space, store.meta, searched["test_logloss_pim"], searched["test_logloss"])]
    else:
        trained = retrain_front(out, cfg, store, space, args.retrain, args.tolerance)
    baselines = [dict(m) for m in report["models"][1:] if m["model"] != "lr"]
    for m in baselines:  # judged on the default PIM config
        m["test_logloss_full_precision"], m["test_logloss"] = m["test_logloss"], m["test_logloss_pim"]
    best = min(baselines, key=lambda m: m["test_logloss"])
    ok = sorted([t for t in trained if t["test_logloss"] <= best["test_logloss"]], key=lambda t: t["energy"])
    result.update(best_baseline=best, baselines=baselines, candidates=trained)

    print(cost_table(baselines, trained, best))
    if ok:
        c = ok[0]
        ratios = cost_ratios(best, c)
        result["chosen"], result["ratios"] = c, ratios
        print(f"co-designed {c['key']} at equal or better log loss than {best['model']}: " + ", ".join(f"{k} x{v:.2f}" for k, v in ratios.items()) + " (baseline / co-designed)")
    else:
        print(f"no co-designed candidate matched the best baseline's ({best['model']}) test log loss")
    lead = min(trained, key=lambda t: t["test_logloss"])
    result["lowest_loss_candidate"], result["ratios_to_matched"] = lead["key"], ratios_to_matched(lead, baselines)
    if not ok:
        for name, r in result["ratios_to_matched"].items():
            print(f"co-designed {lead['key']} vs {name} (equal or better log loss): " + ", ".join(f"{k} x{v:.2f}" for k, v in r.items()))
    result["environment"] = report["environment"]  # the job's (the device it trained on), which provenance keeps
    provenance(result, args)
    path = out / result_name(args)
    write_text_atomic(path, json.dumps(result, indent=2, default=float))
    print(f"-> {path}")


if __name__ == "__main__":
    run_script(main, out_option="--out-dir")
