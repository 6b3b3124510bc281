"""CLI: the main `recnas search` job, `recnas search show`, `recnas study rank`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from recnas.cli.options import OVERWRITE, PROGRESS, SEED, THREADS, device_option
from recnas.cli.paths import path_argument, path_option
from recnas.limits import SEED_MAX, Device

search_app = typer.Typer(help="Search the space (the main job) or inspect a finished search.", invoke_without_command=True, no_args_is_help=False)
study_app = typer.Typer(help="Studies of the supernet's ranking quality.", no_args_is_help=True)


@search_app.callback()
def search(
    ctx: typer.Context,
    data: Optional[Path] = path_option(None, help="Prepared store (recnas data prepare); default: the built-in synthetic benchmark."),
    out: Path = path_option(Path("runs/search"), help="Run folder (re-running continues an interrupted run)."),
    budget: str = typer.Option("cpu", help="Preset: smoke (seconds), cpu (< 10 min on 2 cores), gpu (real data on one GPU)."),
    config: Optional[Path] = path_option(None, help="YAML overriding the preset (keys of JobConfig, see docs/search.md)."),
    space: Optional[str] = typer.Option(None, help="Search space: full, small, full-tiny or small-tiny (default: the --budget preset's: smoke full, cpu small, gpu full; the preset's space_overrides, its widths and blocks, still apply)."),
    objective: Optional[str] = typer.Option(None, help="What the search minimizes: loss, penalized or pareto (default: loss; docs/search.md)."),
    hardware: Optional[str] = typer.Option(None, help="none or pim (co-design: PIM configuration is searched too; default: none)."),
    scoring: Optional[str] = typer.Option(None, help="How candidates are scored: supernet (inherited weights; default) or scratch (each trains briefly from scratch, no supernet)."),
    seed: Optional[int] = typer.Option(None, min=0, max=SEED_MAX, help="Seed of the whole job: synthetic data, path sampling, evolution and every model's training (a config section's own seed: wins)."),
    executor: Optional[str] = typer.Option(None, help="serial (default) or ray: score candidates on a Ray cluster."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join (implies --executor ray; default: start a local one)."),
    emb_dims: Optional[Path] = path_option(None, help="emb_dims.json from `recnas embed search`: per-field embedding widths for every candidate."),
    finalists: Optional[int] = typer.Option(None, min=1, help="Best candidates retrained from scratch; the lowest validation log loss wins (default: the config's, else 1; may change when a run is continued)."),
    threads: Optional[int] = typer.Option(None, min=1, max=1024, help="PyTorch CPU threads for the whole job (default: one per core). The thread count changes the rounding of CPU training, and so the result: give the one results.json records to reproduce a run."),
    device: Optional[Device] = device_option(None, "Device of every training section (supernet, finetune, final)", ". It replaces each section's own device: (the preset's or the config's), where a section's own seed: wins over --seed: where a model trains is not what it learns. Default: each section's own; a continued run may change it."),
    progress: bool = PROGRESS,
) -> None:
    """Prepare data, train a supernet (unless --scoring scratch), evolve, retrain the winner and compare with baselines."""
    if ctx.invoked_subcommand is not None:
        return
    from recnas.search.job import load_job_config
    from recnas.search.pipeline import run_job

    if ray_address is not None and executor is None:
        executor = "ray"  # as on the command line, so it also overrides a config's executor: serial
    over = {"data": str(data) if data else None, "space": space, "hardware": hardware, "scoring": scoring, "seed": seed, "executor": executor, "ray_address": ray_address, "finalists": finalists, "threads": threads, "device": device}
    if objective is not None:
        over["objective"] = {"kind": objective}
    if emb_dims is not None:
        from recnas.space.arch import load_emb_dims

        over["emb_dims"] = load_emb_dims(emb_dims)
    cfg = load_job_config(budget, config, **over)
    run_job(cfg, out, progress=progress)


@search_app.command("show")
def show(run: Path = path_argument(..., help="Run folder of a search."), top: int = typer.Option(10, min=1, help="Candidates to list.")) -> None:
    """Best candidates of a (possibly unfinished) search and, if finished, the results table."""
    from rich.text import Text

    from recnas.cli.terminal import terminal_safe
    from recnas.configs import read_text
    from recnas.errors import DataError
    from recnas.search.job import holds_training_run
    from recnas.search.results import ResultsStore
    from recnas.train.metrics import counted, format_metric

    db = run / "search.sqlite"
    if (run / "config.yaml").is_file() and (not db.exists() or db.stat().st_size == 0):
        if not db.exists() and holds_training_run(run / "config.yaml"):
            # a training command's folder was taken for a search that had not begun its evolution
            raise DataError(f"{run} holds a training run (`recnas supernet/subnet/baseline train`), not a search; `recnas evaluate --ckpt {run / 'model.pt'}` scores its model")
        # a job's folder before its first candidate (while its supernet trains, or the moment
        # the database is created): "is this a recnas search run folder?" of a running search
        raise DataError(f"{run}: no candidate scored yet; the search there has not reached its evolution (run `search show` again later)")
    if not db.exists():
        raise DataError(f"{run}: no search.sqlite here; is this a recnas search run folder?")
    store = ResultsStore(db, read_only=True)  # only looks: never adds tables to a file it did not write
    rows = store.by_logloss()
    console = Console()
    table = Table(title=f"{counted(len(rows), 'candidate')} evaluated (best {min(top, len(rows))} by validation log loss{_ranked_otherwise(run)}{_reported_fewer(run, len(rows))})")
    for col in ("key", "val log loss", "val AUC", "FLOPs", "dense params"):  # as results.md names them: the embedding tables are not in `params`
        # folded, not cut: on a narrow terminal (or COLUMNS) rich cut every cell to "8b…", "0.…",
        # the candidate keys and scores the table is for
        table.add_column(col, overflow="fold")
    for r in rows[:top]:
        # the key as stored, as text: rich took a key of an edited or foreign database for
        # markup (`[/]` was a MarkupError traceback), and sent its control characters on
        table.add_row(Text(terminal_safe(str(r["key"]))), *(format_metric(r.get(name), fmt, missing="-") for name, fmt in (("logloss", "{:.4f}"), ("auc", "{:.4f}"), ("flops", "{:,.0f}"), ("params", "{:,.0f}"))))
    console.print(table)
    if (run / "results.md").exists():
        # as written: rich markup would take `[search progress]` of the plot links (or any
        # bracketed model name) for a style tag and drop it, and its wrapping at the console
        # width (80 columns when piped) cut every wide table row into pieces
        console.print(terminal_safe(read_text(run / "results.md", "results table", DataError).rstrip("\n")), markup=False, highlight=False, soft_wrap=True)
    store.close()


def _ranked_otherwise(run: Path) -> str:
    """The title's note when the run's search ranked by something else than the log loss `show`
    lists by: under a `penalized` objective its best candidate (and finalists) could be missing
    from the list, with nothing saying why. Nothing when the run's config.yaml is missing or
    unreadable: `show` lists any store."""
    from recnas.configs import read_yaml
    from recnas.errors import RecnasError

    try:
        objective = read_yaml(run / "config.yaml").get("objective") if (run / "config.yaml").is_file() else None
    except RecnasError:
        return ""
    kind = objective.get("kind") if isinstance(objective, dict) else None
    if kind == "penalized":
        return "; the search ranked by log loss plus its cost penalty (objective: penalized)"
    if kind == "pareto":
        return "; the search kept a front of log loss and costs (objective: pareto, pareto.md)"
    return ""


def _reported_fewer(run: Path, stored: int) -> str:
    """The title's note when results.md reports a search of fewer candidates than the store
    holds: a run continued with fewer generations (or another evolution seed) keeps the earlier
    search's candidates, which `show` lists, while results.md counted "8 candidates" beside this
    table's 14 without a word (or, while a continued search runs, results.md is the last one's).
    Nothing when results.json is missing or unreadable."""
    from recnas.configs import parse_json, read_text
    from recnas.errors import RecnasError

    try:
        report = parse_json(read_text(run / "results.json", "results"), "results.json") if (run / "results.json").is_file() else None
    except RecnasError:
        return ""
    search = report.get("search") if isinstance(report, dict) else None
    reported = search.get("candidates_this_search") if isinstance(search, dict) else None
    if not isinstance(reported, int) or isinstance(reported, bool) or reported >= stored:
        return ""
    return f"; the search of results.md scored {reported} of them"


@study_app.command("rank")
def rank(
    supernet: Path = path_option(..., help="Supernet model.pt / checkpoint.pt."),
    data: Path = path_option(..., help="The prepared store the supernet was trained on."),
    n: int = typer.Option(20, min=2, max=1000, help="Random subnets to compare (each trains from scratch)."),
    out: Path = path_option(Path("runs/rank-study"), help="Output folder (JSON + scatter plot; re-running continues an interrupted study, a finished one needs --overwrite)."),
    config: Optional[Path] = path_option(None, help="YAML with keys finetune / scratch (TrainConfig) / eval_rows / seed."),
    scratch_cache: Optional[Path] = path_option(None, help="From-scratch results cache, reusable across studies of the same data, space and config (default OUT/scratch_cache.json)."),
    seed: Optional[int] = SEED,
    overwrite: bool = OVERWRITE,
    progress: bool = PROGRESS,
    threads: Optional[int] = THREADS,
    device: Optional[Device] = device_option(None, "override the device of the config's finetune and scratch sections"),
) -> None:
    """Kendall tau / Spearman between supernet scores (with and without fine-tuning) and from-scratch training."""
    from recnas.environment import cpu_threads
    from recnas.search.study import RankStudyConfig, run_rank_study

    cfg = RankStudyConfig.load(config)
    if seed is not None:  # the random subnets drawn, and the cache's fingerprint, as the config's seed would
        cfg = cfg.model_copy(update={"seed": seed})
    if device is not None:  # where it fine-tunes and scores (and the cache's fingerprint), as the sections' device would
        cfg = cfg.model_copy(update={name: getattr(cfg, name).with_overrides(source="command line", device=device) for name in ("finetune", "scratch")})
    with cpu_threads(threads):
        result = run_rank_study(supernet, data, n, out, cfg, progress=progress, scratch_cache=scratch_cache, overwrite=overwrite)
    from recnas.train.metrics import format_metric

    console = Console(soft_wrap=True)  # whole lines in a piped log
    for name, r in result["correlation"].items():  # undefined (every score alike, or none finite): n/a, as every command prints it, not "+nan"
        console.print(f"{name:>22}: Kendall tau {format_metric(r['kendall_tau'], '{:+.3f}')}  Spearman {format_metric(r['spearman'], '{:+.3f}')}  (n={r['n']})")
    best = result["best_scratch"]
    if result["diverged"]:
        console.print(f"[yellow]warning:[/] {len(result['diverged'])} subnet(s) diverged in from-scratch training and are left out: {', '.join(result['diverged'])}")
    if result["worse_than_base_rate"]:
        console.print(
            f"[yellow]warning:[/] {len(result['worse_than_base_rate'])} of {result['n']} subnet(s) ended their from-scratch training above the log loss of "
            f"predicting the click rate ({result['base_rate_logloss']:.4f}): their ranks say little; give `scratch` more steps or a lower lr (--config)"
        )
    console.print(f"best from scratch: {best['arch']} val log loss {best['logloss']:.4f}; {result['scratch_reused']} of {result['n']} from-scratch results reused from the cache")
    console.print(f"-> {out / 'rank_study.json'}, {out / 'rank_study.png'}", markup=False)


def register(app: typer.Typer) -> None:
    """Attach the search commands to the root app."""
    app.add_typer(search_app, name="search")
    app.add_typer(study_app, name="study")
