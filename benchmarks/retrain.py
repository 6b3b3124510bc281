"""One model retrained the way the main job trains its finalists and baselines, at several data
seeds and training seeds.

Why: the margins between the searched model and the best baseline are often inside one model's
training-seed spread, and the job trains each model once, at the training seed equal to the data
seed. This trains one model, a baseline or a finished search's architecture, through the job's
own `fit_selected`: its `final` recipe and `final_grid`, the point kept by validation. So each
number is the job's own at that seed, and more training seeds or other baseline
hyper-parameters (or, for the searched model, other space options such as its CIN head) cost no
search. Markdown tables on stdout; JSON in --out-dir, rewritten as each (data seed, training
seed) finishes, so a run that fails or is stopped keeps what finished (and a re-run loads it).

    # xDeepFM as BARS ran it, 4M rows, data seeds 0 and 3, training seeds 0-2, two at a time
    python benchmarks/retrain.py xdeepfm --budget gpu --config configs/search-gpu-1m-scratch.yaml \\
        --rows 4000000 --seeds 0,3 --train-seeds 0,1,2 --hparams '{"cin_split_half": false}' --jobs 2
    # a finished search's winner (one run folder per data seed), training seeds 0-2, one grid point
    python benchmarks/retrain.py searched --run 'benchmarks/out/search_quality/seed{seed}' --seeds 0,3 \\
        --train-seeds 0,1,2 --grid '{"embedding_weight_decay": [1.0e-3]}'
    # the same winners with xDeepFM's whole CIN as their head (space options over the job's)
    python benchmarks/retrain.py searched --run 'benchmarks/out/search_quality/seed{seed}' --seeds 0,3 \\
        --space '{"cin_head": [200, 200, 200], "cin_head_split": false}'

A run folder gives the whole job config (its config.yaml: data, space, recipe, grid), so
--budget, --config and --rows are refused beside --run. `--pick` says which of its
architectures: `chosen` (best_arch.json, the model the job reported), `lowest-logloss` (the
candidate of lowest search log loss in search.sqlite: what `finalists: 1` trains under a
log-loss objective) or a candidate's key.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console

from recnas import configs
from recnas.baselines import BASELINES
from recnas.configs import write_text_atomic
from recnas.environment import environment
from recnas.errors import ConfigError
from recnas.scripts import failures, output_dir, positive_int, run_script, seed_list, side_by_side
from recnas.search.evaluator import Genotype
from recnas.search.job import JobConfig, grid_points, load_job_config
from recnas.search.fitting import baseline_builder, fit_selected, subnet_builder
from recnas.search.pipeline import check_baselines, prepare_data, result_row
from recnas.search.results import ResultsStore
from recnas.space import get_space

SEARCHED = "searched"


def json_object(text: str) -> dict:
    """argparse type of --hparams / --space / --grid: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a JSON object, e.g. '{{\"cin_split_half\": false}}'; got {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def job_config(args, seed: int, train_seed: int | None, grid: dict | None = None) -> JobConfig:
    """The job config of data seed `seed` (from its run folder, or the budget, --config and
    --rows) with the training seed, --grid (or `grid`), --space (a searched model's) and
    --hparams (a baseline's) applied; validated as the job validates its own."""
    if args.run:
        path = run_folder(args.run, seed) / "config.yaml"
        if not path.exists():
            raise ConfigError(f"{path.parent} is not a search run folder (no config.yaml)")
        data, source = configs.load(JobConfig, path).model_dump(mode="json"), str(path)
        if data["seed"] != seed:
            raise ConfigError(f"{path.parent} is a run of data seed {data['seed']}, not {seed}: give --run a folder per seed, e.g. 'out/seed{{seed}}'")
    else:
        data, source = load_job_config(args.budget, args.config, seed=seed, synthetic_rows=args.rows, data=args.data).model_dump(mode="json"), f"budget {args.budget!r}"
    data["final"] = {**data["final"], "seed": data["final"]["seed"] if train_seed is None else train_seed}
    if grid is not None or args.grid is not None:
        data["final_grid"] = grid if grid is not None else args.grid
    if args.space:
        data["space_overrides"] = {**data["space_overrides"], **args.space}
    if args.model != SEARCHED:
        data["baselines"] = [args.model]
        data["baseline_hparams"] = {args.model: {**data["baseline_hparams"].get(args.model, {}), **(args.hparams or {})}}
    return configs.validate(JobConfig, data, source + " with this script's options")


def run_folder(template: str, seed: int) -> Path:
    return Path(template.replace("{seed}", str(seed)))


def picked(args, seed: int):
    """(Architecture, PIMConfig or None) that `--pick` names in the search run of data seed
    `seed`. Read for every seed before any data is made: a bad key was refused only after the
    synthetic data had been generated."""
    from recnas.hardware import PIMConfig
    from recnas.space.arch import Architecture

    run = run_folder(args.run, seed)
    if args.pick == "chosen":
        if not (run / "best_arch.json").exists():
            raise ConfigError(f"{run} has no best_arch.json (the search has not finished): pick a candidate with --pick lowest-logloss or its key")
        arch = Architecture.load(run / "best_arch.json")
        hw = PIMConfig.model_validate_json((run / "best_hardware.json").read_text()) if (run / "best_hardware.json").exists() else None
        return arch, hw
    if not (run / "search.sqlite").exists():
        raise ConfigError(f"{run} has no search.sqlite")
    results = ResultsStore(run / "search.sqlite", read_only=True)
    try:
        ranked = results.by_logloss()
        if args.pick == "lowest-logloss" and not ranked:
            raise ConfigError(f"{run / 'search.sqlite'} holds no scored candidate yet")
        return results.design(ranked[0]["key"] if args.pick == "lowest-logloss" else args.pick)
    finally:
        results.close()


def builder(args, cfg: JobConfig, seed: int, store):
    """`build` for the job's training code, a label of what it builds, and the PIM configuration
    it trains on (a co-design search's winner, else None)."""
    if args.model != SEARCHED:
        return baseline_builder(args.model, store.meta, cfg.baseline_hparams.get(args.model, {})), args.model, None
    g = Genotype(*picked(args, seed))
    return subnet_builder(g, get_space(cfg.space, **cfg.space_overrides), store.meta), f"{SEARCHED} {g.key}", g.hardware


def _device(cfg: JobConfig) -> str:
    return "cuda" if cfg.final.device != "cpu" and torch.cuda.is_available() else "cpu"


def _folder(args, label: str, seed: int, train_seed: int) -> Path:
    """Where one training runs: by model (its architecture's hash for a search's, and a digest
    of --hparams or --space where given), data seed and training seed, so another model never
    meets this one's checkpoint and a re-run loads what finished."""
    return args.out_dir / _name(args, label) / f"seed{seed}_train{train_seed}"


def result_name(args) -> str:
    """The result JSON's name: the model (as `_name`), its data seeds, where given its training
    seeds, and a digest of the other options that choose what is trained (`_setting`), so
    another run into the same --out-dir (other seeds, other options) never overwrites this
    one's."""
    seeds = "seeds" + "-".join(map(str, args.seeds))
    train = "-train" + "-".join(map(str, args.train_seeds)) if args.train_seeds else ""
    setting = _setting(args)
    digest = "-" + hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:8] if setting else ""
    return f"retrain-{_name(args, args.model)}-{seeds}{train}{digest}.json"


def _setting(args) -> dict:
    """The options besides the model, its seeds, --hparams and --space that change the result,
    where given: the search run and its pick, the job's budget, config, rows or data, and the
    grid. (A run with --grid, another --run or --pick wrote over the JSON of the run without.)"""
    given = {"run": args.run, "pick": None if args.pick == "chosen" else args.pick, "budget": None if args.budget in (None, "cpu") else args.budget,
             "config": args.config, "rows": args.rows, "data": args.data, "grid": args.grid}
    return {k: v for k, v in given.items() if v is not None}


def _name(args, label: str) -> str:
    changes = args.hparams or args.space  # one or the other: a baseline's hparams, a searched model's space
    if changes:
        label += "-" + hashlib.sha1(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:8]
    return label.replace(" ", "-")


def train(args, seed: int, train_seed: int | None, grid: dict | None = None, report: bool = True) -> dict | None:
    """Train (or load, where it finished) the model at data seed `seed`, training seed
    `train_seed` (None: the config's), at every point of the grid; with `report`, keep the
    point of lowest validation log loss and return its results row."""
    cfg = job_config(args, seed, train_seed, grid)
    console = Console(soft_wrap=True, quiet=not report)
    store = prepare_data(cfg, args.out_dir / "models", console)  # the data in out-dir/data
    if args.model != SEARCHED:
        check_baselines(cfg, store.meta)
    build, label, hw = builder(args, cfg, seed, store)
    device = _device(cfg)
    trained = fit_selected(build, cfg, store, _folder(args, label, seed, cfg.final.seed), False, device, hardware=hw, validate=report)
    if not report:
        return None
    row = result_row(label, trained, store, {}, device, hw)
    hparams = {"hparams": cfg.baseline_hparams.get(args.model, {})} if args.model != SEARCHED else {}
    return {"seed": seed, "train_seed": cfg.final.seed, "val_logloss": trained["val_logloss"], **hparams, **row}


def _train_point(job: tuple) -> None:
    args, (seed, train_seed, point) = job
    train(args, seed, train_seed, grid={k: [v] for k, v in point.items()}, report=False)


def summarise(rows: list[dict]) -> dict:
    """Per data seed: mean and spread (max - min) of the test log loss over training seeds."""
    out = {}
    for seed in dict.fromkeys(r["seed"] for r in rows):
        ll = [r["test_logloss"] for r in rows if r["seed"] == seed]
        out[seed] = {"train_seeds": len(ll), "test_logloss_mean": statistics.fmean(ll), "test_logloss_spread": max(ll) - min(ll)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help=f"a baseline's name (lr, dlrm, deepfm, dcnv2, autoint, xdeepfm), or {SEARCHED!r} with --run")
    ap.add_argument("--run", default=None, help="a search's run folder; '{seed}' in it stands for each data seed (its config.yaml is the job config)")
    ap.add_argument("--pick", default="chosen", help="with searched: chosen, lowest-logloss or a candidate key")
    ap.add_argument("--budget", default=None, help="the job's preset without --run (default: cpu)")
    ap.add_argument("--config", default=None, help="YAML overrides for the job, without --run")
    ap.add_argument("--rows", type=positive_int, default=None, help="synthetic rows, without --run (default: the budget's)")
    ap.add_argument("--data", default=None, help="a prepared store instead of the synthetic benchmark, without --run")
    ap.add_argument("--seeds", type=seed_list, default=None, help="data seeds, comma-separated (default: 0, or the seed of the one --run)")
    ap.add_argument("--train-seeds", type=seed_list, default=None, help="training seeds (default: each data seed's own, as the job)")
    ap.add_argument("--hparams", type=json_object, default=None, help="a baseline's hyper-parameters over the job's, as JSON")
    ap.add_argument("--space", type=json_object, default=None, help="with searched: space options over the job's, as JSON (e.g. another CIN head)")
    ap.add_argument("--grid", type=json_object, default=None, help="final_grid instead of the job's, as JSON")
    ap.add_argument("--jobs", type=positive_int, default=1, help="trainings side by side (one per data seed, training seed and grid point), each in its own process")
    ap.add_argument("--out-dir", type=output_dir, default=Path("benchmarks/out/retrain"), help="the data, one folder per model and seeds, and the result JSON (named by the model, seeds and options)")
    args = ap.parse_args()
    if args.run and any(v is not None for v in (args.budget, args.config, args.rows, args.data)):
        raise ConfigError("--run gives the job config: leave out --budget, --config, --rows and --data")
    if args.model != SEARCHED and args.model not in BASELINES:
        raise ConfigError(f"model: {args.model!r} is neither {SEARCHED!r} nor a baseline ({', '.join(BASELINES)})")
    if args.model == SEARCHED and not args.run:
        raise ConfigError("searched needs --run: the search whose architecture to retrain")
    if args.model == SEARCHED and args.hparams is not None:
        raise ConfigError("--hparams is for a baseline")
    if args.model != SEARCHED and args.space is not None:
        raise ConfigError("--space is for searched (a baseline's own options: --hparams)")
    if args.model != SEARCHED and args.pick != "chosen":
        raise ConfigError("--pick is for searched")
    args.budget = args.budget or "cpu"
    if args.seeds is None:
        if args.run and "{seed}" in args.run:
            raise ConfigError("--run with '{seed}' needs --seeds: the data seeds whose runs to read")
        args.seeds = [configs.load(JobConfig, Path(args.run) / "config.yaml").seed] if args.run and (Path(args.run) / "config.yaml").exists() else [0]

    if args.model == SEARCHED:  # each run's config, pick and space checked before any data is made
        for seed in args.seeds:
            cfg = job_config(args, seed, None)
            picked(args, seed)[0].validate_for(get_space(cfg.space, **cfg.space_overrides))
    units = [(s, t) for s in args.seeds for t in args.train_seeds or [None]]
    path = args.out_dir / result_name(args)
    rows: dict[tuple, dict] = {}

    def finished(unit: tuple) -> None:  # evaluated as soon as its trainings are done, and saved
        rows[unit] = train(args, *unit)
        save(args, path, [rows[u] for u in units if u in rows], missing=[u for u in units if u not in rows])

    if args.jobs > 1:  # every grid point in its own process; each (data seed, training seed) reported as soon as all of its points are done
        tasks = [(args, (s, t, p)) for s, t in units for p in grid_points(job_config(args, s, t).final_grid)]
        left = Counter(task[:2] for _, task in tasks)

        def point_done(job, _):
            unit = job[1][:2]
            left[unit] -= 1
            if not left[unit]:  # every point of it trained (a failed one is never counted)
                finished(unit)

        failed = side_by_side(_train_point, tasks, args.jobs, done=point_done)
    else:
        failed = []
        for unit in units:
            finished(unit)
    done = [rows[u] for u in units if u in rows]
    if done:
        report(args, done)
        print(f"-> {path}")
    if failed:
        first_error: dict[tuple, BaseException] = {}
        for (_, task), exc in failed:
            first_error.setdefault(task[:2], exc)
        raise failures(list(first_error.values()), len(units), "(data seed, training seed) trainings", f"the {len(done)} finished are in {path}; " if done else "")


def save(args, path: Path, rows: list[dict], missing: list[tuple]) -> None:
    """The result JSON, rewritten after every finished (data seed, training seed): `missing`
    lists those not (yet) reported."""
    device = _device(job_config(args, args.seeds[0], None))
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "environment": environment(device), "rows": rows, "summary": summarise(rows), "missing": [{"seed": s, "train_seed": t} for s, t in missing]}
    write_text_atomic(path, json.dumps(result, indent=2, default=float))


def report(args, rows: list[dict]) -> None:
    """Markdown tables on stdout: every training, then the mean and spread per data seed."""
    print(f"\n| {args.model}: data seed | training seed | validation log loss (of each grid point, the kept one in bold) | test log loss | test AUC | gap to Bayes | train s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        points = [(g["point"] + ": ", g["val_logloss"], g["point"] == r.get("final_choice")) for g in r.get("grid", [])] or [("", r["val_logloss"], False)]
        val = ", ".join(f"**{p}{v:.5f}**" if kept else f"{p}{v:.5f}" for p, v, kept in points)
        gap = f"{r['gap_to_bayes']:.5f}" if "gap_to_bayes" in r else "-"
        print(f"| {r['seed']} | {r['train_seed']} | {val} | {r['test_logloss']:.5f} | {r['test_auc']:.5f} | {gap} | {r['train_seconds']:.0f} |")
    print("\n| data seed | training seeds | test log loss, mean | spread |\n|---|---|---|---|")
    for seed, v in summarise(rows).items():
        print(f"| {seed} | {v['train_seeds']} | {v['test_logloss_mean']:.5f} | {v['test_logloss_spread']:.5f} |")

if __name__ == "__main__":
    run_script(main, out_option="--out-dir")
