"""Runs the main job stage by stage; each stage is skipped when its artifacts exist."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.markup import escape

from recnas.configs import require_type, write_text_atomic
from recnas.data.store import CTRStore, check_outside_results, check_run_folder, huge_dense_note, one_class_notes
from recnas.environment import cpu_threads, environment, tf32_matmuls
from recnas.errors import CheckpointError, ConfigError, DataError, RecnasError
from recnas.hardware.quant import quantized
from recnas.search.console import progress_bar, stage
from recnas.search.evaluator import CandidateEvaluator, architecture_costs, model_costs
from recnas.search.evolution import RegularizedEvolution
from recnas.search.finalists import train_finalists
from recnas.search.fitting import DATA_FILE, baseline_with_spec, baseline_builder, check_run_data, fit_or_load, fit_selected, selection_fields, warn_diverged_points
from recnas.search.job import JobConfig, check_same_run, decays_every_table, dump_config, grid_points
from recnas.search.objective import diverged_keys, format_targets, resolve_targets
from recnas.search.report import PARETO_FILES, write_report
from recnas.search.results import ResultsStore
from recnas.space import get_space
from recnas.space.arch import check_emb_dims
from recnas.space.samplers import make_sampler
from recnas.staging import check_writable, exclusive, remove_stale_writes
from recnas.train import TrainConfig, evaluate
from recnas.train.checkpoint import load_checkpoint
from recnas.train.model_factory import SupernetOfOtherPaths, supernet_spec
from recnas.train.metrics import counted
from recnas.train.resume import data_identity
from recnas.train.trainer import CHECKPOINT_FILE, MODEL_FILE


def prepare_data(cfg: JobConfig, out: Path, console: Console) -> CTRStore:
    if cfg.data is not None:
        return CTRStore(cfg.data)
    path = out.parent / "data" / f"synthetic-{cfg.synthetic_rows}-seed{cfg.seed}"
    try:  # a prepared store named `data` beside --out: the cache written inside it blocked its --overwrite
        check_outside_results(path.parent, "the synthetic data cache")  # not `path`: a cached store is one
    except ConfigError:
        raise ConfigError(f"the job keeps its synthetic data in {path.parent}, beside --out {out}, but that is a prepared data store (or inside a result) "
                          f"that holds only its own files: give --out in another folder, or run on that store with --data") from None
    # shared by the jobs of every run folder beside `out`: a job that finds another one generating
    # it waits, then reuses it
    waiting = functools.partial(console.print, f"[bold]data[/] waiting for another job generating {escape(str(path))}")
    with exclusive(path, "synthetic data cache", wait=True, waiting=waiting):
        if not (path / "meta.json").exists():
            from recnas.data.synthetic import generate

            console.print(f"[bold]data[/] generating the synthetic benchmark ({cfg.synthetic_rows:,} rows) -> {escape(str(path))}")
            generate(path, rows=cfg.synthetic_rows, seed=cfg.seed)
        else:
            console.print(f"[bold]data[/] reusing {escape(str(path))}")
    return CTRStore(path)


def check_baselines(cfg: JobConfig, meta) -> None:
    """Build every baseline of the job (and its objective's reference) once before any training:
    one that cannot be built on this data (dlrm's dot interaction with one categorical field and
    no dense features, any baseline without categorical fields) used to fail only after the
    supernet, the search and the retrain. What a build checks depends on the fields, not on their
    vocabulary sizes, so each is built with one-row tables: no memory for the real ones."""
    from recnas.train.plan import check_batch_norm, train_batch_rows

    small = meta.model_copy(update={"vocab_sizes": [1] * len(meta.vocab_sizes)})
    # the fewest rows a training batch of the job's final recipe has (a baseline with batch_norm needs 2)
    rows = min(train_batch_rows(cfg.final_config(point), meta.rows.get("train", 0)) for point in grid_points(cfg.final_grid))
    for name in dict.fromkeys([*cfg.baselines, *([cfg.objective.reference] if cfg.objective.reference else [])]):
        try:
            model, _ = baseline_with_spec(name, small, cfg.baseline_hparams.get(name, {}))
            if name in cfg.baselines:  # trained (the reference is only measured)
                check_batch_norm(model, rows)
        except RecnasError as exc:
            instead = "leave it out of `baselines`" if name in cfg.baselines else "choose another objective.reference"
            if isinstance(exc, DataError):  # the data rules it out (no categorical fields): no hparams change that
                everyone = "" if name not in cfg.baselines else "; `baselines: []` runs the search without any"
                raise DataError(f"{exc} (a baseline of this job: {instead} in --config{everyone})") from None
            raise type(exc)(f"{exc} (a baseline of this job: set its baseline_hparams in --config, or {instead})") from None


def check_devices(cfg: JobConfig) -> None:
    """The device and mixed precision of every training the job runs, checked before any of it:
    `final: {device: cuda}` on a machine without CUDA used to fail only after the supernet and
    the search, and without saying which section asked for it."""
    from recnas.train.device import check_runs_here

    sections = {"supernet": cfg.supernet, "finetune": cfg.finetune} if cfg.scoring == "supernet" else {}
    sections["final"] = cfg.final  # also where the proxy, every final_grid point and table phase train
    for name, tcfg in sections.items():
        if tcfg is not None:
            check_runs_here(tcfg, name)


def _budget(tcfg: TrainConfig) -> str:
    """A training config's length and rate, for the job's stage line."""
    length = f"{tcfg.max_steps} steps" if tcfg.max_steps is not None else counted(tcfg.epochs, "epoch")
    return f"{length}, lr {tcfg.lr:g}, batch {tcfg.batch_size}"


def _earlier(folder: Path) -> str:
    """The supernet stage's note on a re-run job: what it finds of an earlier run in its folder
    (a re-run after an interruption said nothing of what it reused or went on from)."""
    if (folder / MODEL_FILE).is_file():
        return " (trained earlier in this run folder)"
    if (folder / CHECKPOINT_FILE).is_file():
        return " (begun earlier in this run folder: going on from its checkpoint)"
    return ""


# what a search writes at the top of its run folder: files, and folders of models
RUN_FILES = ("config.yaml", DATA_FILE, "space.yaml", "search.sqlite", "best_arch.json", "best_hardware.json", "results.json", "results.md",
             "search_progress.png", "score_vs_cost.png", *PARETO_FILES)
RUN_FOLDERS = ("supernet", "finalists", "best", "baselines")


def run_job(cfg: JobConfig, out: str | Path, progress: bool = True, console: Console | None = None) -> dict:
    """The whole pipeline; returns the results dict also written to out/results.json. The run
    folder is locked throughout: a second job on the same `out` is refused, not interleaved. An
    `out` that is a file is refused first: it used to fail with a bare "File exists" after the
    synthetic data was generated.

    `cfg` is a `JobConfig` (`load_job_config` makes one from a preset, a file and overrides).
    The job sets PyTorch's CPU threads to `cfg.threads` (if set) and, on CUDA, runs its float32
    matmuls as TF32 (as its trainers do); both are the caller's again once it returns. It seeds
    the global RNGs (torch, numpy, random) before each model it builds (docs/search.md)."""
    require_type(cfg, JobConfig, "run_job's cfg", "recnas.search.job.load_job_config(budget, path, **overrides) makes one")
    check_run_folder(out)
    with exclusive(out), cpu_threads(cfg.threads), tf32_matmuls(torch.cuda.is_available()), _warnings_once(logging.getLogger("recnas.train")):
        remove_stale_writes(out)  # a hard-killed run's half-written files (best/ would copy them)
        # soft wrap: piped into a log (80 columns), rich used to break lines mid-path
        return _run_job(cfg, Path(out), progress, console or Console(soft_wrap=True))


class _Once(logging.Filter):
    """Lets each warning text through once."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


@contextlib.contextmanager
def _warnings_once(logger: logging.Logger):
    """A job trains hundreds of models with one recipe: a trainer's warning about that recipe
    ("warmup_steps (1000) outlasts this run's 9 steps", from a preset on small data) was printed
    once per candidate scored from scratch, thousands of identical lines at the `gpu` budget."""
    once = _Once()
    logger.addFilter(once)
    try:
        yield
    finally:
        logger.removeFilter(once)


def _run_job(cfg: JobConfig, out: Path, progress: bool, console: Console) -> dict:
    t_start = time.perf_counter()
    check_same_run(cfg, out / "config.yaml")
    if out.is_dir():  # a continued run: a folder where a result file goes failed only at the end, after every model had trained
        check_writable(out, RUN_FILES, RUN_FOLDERS, what="search")
    # everything that can be checked is checked before the run folder is written, so the config
    # saved there passed every check (and `check_same_run` holds each re-run to it)
    store = prepare_data(cfg, out, console)
    store.check_trainable()
    check_run_data(out, store)
    meta = store.meta
    data_notes = one_class_notes(meta)  # results.md says them too: its table shows such a split's AUC as "-"
    for note in data_notes:
        console.print(f"[yellow]warning:[/] {escape(note)}")
    check_baselines(cfg, meta)
    check_devices(cfg)
    # the cost targets, resolved before any training: a reference that gives none fails here
    objective = resolve_targets(cfg.objective, meta, cfg.baseline_hparams.get(cfg.objective.reference or "", {}))
    space = get_space(cfg.space, **cfg.space_overrides)
    if space.cin_head and not decays_every_table(cfg):
        console.print(
            "[yellow]warning:[/] cin_head without weight decay on the embedding tables in every final training: "
            "measured so, the head made the models overfit sooner and lose (docs/search.md, \"Search spaces\"); "
            "set final.embedding_weight_decay or final_grid: {embedding_weight_decay: [...]}"
        )
    emb_dims = None if cfg.emb_dims is None else check_emb_dims(cfg.emb_dims, space, meta.n_sparse)
    if cfg.executor == "ray":
        from recnas.search.executors import connect_ray

        connect_ray(cfg.ray_address, workers=cfg.ray_workers)
    out.mkdir(parents=True, exist_ok=True)
    # a continued run keeps the config its results come from until it finishes: a re-run with
    # other `final` settings or baselines that fails midway used to leave it describing that run
    if not (out / "config.yaml").exists():
        dump_config(cfg, out / "config.yaml")
    if not (out / DATA_FILE).exists():  # a folder of a run from before it records the data now
        write_text_atomic(out / DATA_FILE, json.dumps(data_identity(meta), indent=2))
    # the space best_arch.json belongs to: `recnas subnet train --space <run>/space.yaml` rebuilds it
    write_text_atomic(out / "space.yaml", yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))
    # where candidates are scored: beside the supernet, or where the from-scratch proxies train
    wants_gpu = (cfg.supernet if cfg.scoring == "supernet" else cfg.final).device != "cpu"
    device = "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"
    if wants_gpu and device == "cpu" and (cfg.supernet.resident_data or cfg.final.resident_data):
        # `--budget gpu` (and the GPU configs) on a machine without CUDA: it runs, for hours
        console.print(
            "[yellow]warning:[/] no CUDA device: this job's settings are sized for a GPU (resident_data) and will "
            "train on the CPU, many times slower; on 2 cores use the default `--budget cpu`"
        )

    # 1. supernet (none when candidates are scored from scratch)
    supernet, sn_metrics, stale = None, {}, None
    if cfg.scoring == "supernet":
        from recnas.supernet import Supernet

        stage(console, "supernet", f"space={space.name} blocks={space.n_blocks} sampler={cfg.sampler}{_earlier(out / 'supernet')}")
        sampler = make_sampler(cfg.sampler, space, cfg.seed)
        try:
            supernet, sn_metrics = fit_or_load(lambda: (Supernet(space, meta), supernet_spec(space, meta, cfg.sampler)), cfg.supernet, store, out / "supernet", progress, sampler)
            supernet = supernet.to(device).eval()
        except SupernetOfOtherPaths as exc:
            if not (out / "supernet" / MODEL_FILE).is_file():  # still in training: nothing of it to go on from
                raise CheckpointError(f"{exc.problem}; give the job another --out, where it trains its supernet afresh") from None
            # trained: the candidates scored on it then stand (a finished run re-run reports them again); scoring one more is refused
            stale, sn_metrics = exc, load_checkpoint(out / "supernet" / MODEL_FILE, mmap=True).get("metrics") or {}
        score_cfg, how = cfg.finetune, "inherited weights"
    else:
        score_cfg, how = cfg.proxy_config(), "from scratch"
        stage(console, "supernet", f"none: scoring: scratch trains every candidate from scratch ({_budget(score_cfg)})")

    # 2. evolution
    codesign = cfg.hardware == "pim"
    stage(console, "search", f"regularized evolution: population {cfg.evolution.population}, {counted(cfg.evolution.generations, 'generation')}, objective {objective.kind}")
    if objective.reference is not None:
        console.print("    targets (" + objective.reference + " / ratios): " + format_targets(objective.targets))
    results = ResultsStore(out / "search.sqlite")
    evaluator = CandidateEvaluator(space, store, score_cfg, cfg.eval_rows, device, supernet=supernet) if stale is None else _refuse_scoring(stale)
    executor = None
    if cfg.executor == "ray" and stale is None:
        from recnas.search.executors import RayExecutor

        executor = RayExecutor(space, store.dir, score_cfg, cfg.eval_rows, None if supernet is None else out / "supernet" / MODEL_FILE, cfg.ray_workers, cfg.ray_address)
    evo = RegularizedEvolution(space, evaluator, results, cfg.evolution, objective, codesign=codesign, evaluate_many=executor, emb_dims=emb_dims, pim_choices=cfg.pim_choices)
    with progress_bar(progress, console) as bar:
        task = bar.add_task("generations", total=cfg.evolution.generations)
        evo_result = evo.run(lambda g, n: bar.update(task, completed=g))
    if executor is not None:
        executor.shutdown()
    console.print(f"    best candidate {evo_result.best.key}: val log loss {evo_result.best_metrics['logloss']:.4f} ({how}), {evo_result.evaluated} evaluated this run, {len(results)} in store")
    _warn_diverged(evo_result.history, cfg, console)
    _warn_above_base_rate(evo_result.history, cfg, store, console)

    # 3. the winner, from scratch: the best `finalists` by search score, chosen by validation
    chosen, finalists, dropped = train_finalists(evo, evo_result, cfg, space, store, out, progress, device, console)
    best = chosen["genotype"]
    rows = []
    costs = architecture_costs(best.arch, space, meta, best.hardware)
    rows.append(result_row("recnas (searched)", chosen, store, costs, device, best.hardware))

    # 4. baselines under the same training budget
    for name in cfg.baselines:
        stage(console, "baseline", name)
        trained = fit_selected(baseline_builder(name, meta, cfg.baseline_hparams.get(name, {})), cfg, store, out / "baselines" / name, progress, device, validate=False)
        warn_diverged_points(trained, console)
        pim = _default_pim() if codesign else None
        rows.append(result_row(name, trained, store, model_costs(trained["model"], meta, pim), device, pim))

    data_notes += _nan_test_notes(rows, store, console) + _above_base_rate_notes(rows, store, console)
    report = {
        "dataset": meta.name,
        "data_notes": data_notes,
        "bayes": meta.bayes,
        "space": space.model_dump(mode="json"),
        "best_arch": json.loads(best.arch.to_json()),
        "best_hardware": None if best.hardware is None else best.hardware.model_dump(),
        "supernet": {k: sn_metrics.get(k) for k in ("steps", "train_seconds", "samples_per_s")} if cfg.scoring == "supernet" else None,
        "search": {"scoring": cfg.scoring, "evaluated_this_run": evo_result.evaluated, "candidates_in_store": len(results)},
        "objective": objective.model_dump(mode="json"),
        "final_grid": cfg.final_grid,
        "finalists": [{"key": f["key"], "search_score": f["search_score"], "val_logloss": f["val_logloss"], "chosen": f is chosen, **selection_fields(f)} for f in finalists]
        + [{**d, "chosen": False} for d in dropped],  # halving: the dropped ones, with their rung and best validation log loss then
        "models": rows,
        "total_seconds": time.perf_counter() - t_start,
        "environment": environment(device),  # of the run that finished the job; the result depends on it
    }
    write_report(out, report, results, evo.run_name, objective, keys={h["key"] for h in evo_result.history})
    dump_config(cfg, out / "config.yaml")  # the settings of the results just written
    results.close()
    console.print(f"[bold green]done[/] in {report['total_seconds']:.0f}s -> {escape(str(out / 'results.md'))}")
    return report


def _nan_test_notes(rows: list[dict], store: CTRStore, console: Console) -> list[str]:
    """A warning per model whose test log loss is NaN (logits that are not numbers on some test
    rows, e.g. of a huge magnitude): the table showed its log loss and AUC as "-" without a word,
    as if not measured. Said by the job and above results.md's table."""
    nan = [r["model"] for r in rows if isinstance(r["test_logloss"], float) and math.isnan(r["test_logloss"])]
    if not nan:
        return []
    huge = huge_dense_note(store, "test")
    note = (f"the logits of {', '.join(nan)} are not numbers on some test rows: {'its' if len(nan) == 1 else 'their'} test log loss and AUC are shown as -"
            + (f"; {huge}" if huge else ""))
    console.print(f"[yellow]warning:[/] {escape(note)}")
    return [note]


def _above_base_rate_notes(rows: list[dict], store: CTRStore, console: Console) -> list[str]:
    """A warning for the models whose test log loss is above that of predicting the training
    click rate for every row: they learnt nothing usable (an lr too high leaves finite but
    useless weights: the smoke job at a final lr of 30 gave the searched model 28.23 and LR 7.69
    against 0.5284), which the table gave as one more number. Said by the job and above results.md's table."""
    from recnas.search.study import above_base_rate, store_base_rate

    base = store_base_rate(store, "test")
    worse = [r["model"] for r in rows if above_base_rate(r["test_logloss"], base)]
    if not worse:
        return []
    note = (f"the test log loss of {', '.join(worse)} is above that of predicting the training click rate for every row ({base:.4f}): "
            f"{'it' if len(worse) == 1 else 'they'} learnt nothing usable; check the final training's lr and length")
    console.print(f"[yellow]warning:[/] {escape(note)}")
    return [note]


def _refuse_scoring(stale: SupernetOfOtherPaths) -> Callable:
    """The evolution's scorer where the run's supernet is of a recnas that drew other subnets from
    it: the stored candidates are reported as scored then, a candidate still to score stops the job."""

    def refuse(geno):
        raise CheckpointError(f"{stale.problem}; this run has candidates left to score on it: give the job another --out, where it trains its supernet afresh")

    return refuse


def _warn_diverged(history: list[dict], cfg: JobConfig, console: Console) -> None:
    """A warning when candidates of this search diverged (scored inf; NaN logits score so too): a
    search where every one did ranked none, and went on to retrain an arbitrary one as if found."""
    keys = {h["key"] for h in history}
    diverged = diverged_keys(history)
    if not diverged:
        return
    training = "fine-tune (finetune)" if cfg.scoring == "supernet" else "training from scratch (final with proxy)"
    if len(diverged) == len(keys):
        console.print(f"[yellow]warning:[/] every candidate ({len(keys)}) diverged in its {training} and scored inf: the search ranked none of them, "
                      "so the finalists are arbitrary; lower that training's lr (or set its grad_clip)")
    else:
        console.print(f"[yellow]warning:[/] {len(diverged)} of {len(keys)} candidates diverged in their {training} and scored inf (left behind by the search)")


def _warn_above_base_rate(history: list[dict], cfg: JobConfig, store: CTRStore, console: Console) -> None:
    """A warning when even the best candidate of this search validates above the constant
    prediction of the training click rate: the candidates learnt nothing usable in their scoring
    (a fine-tune at lr 1e3 left finite but useless weights: best 11.05 against 0.62), so the
    search ranked noise, which the job's "best candidate" line gave without a word."""
    from recnas.search.study import above_base_rate, store_base_rate

    scores = [h["logloss"] for h in history if math.isfinite(h["logloss"])]
    if not scores or not above_base_rate(min(scores), base := store_base_rate(store, "val", cfg.eval_rows)):  # none finite: _warn_diverged said so
        return
    training = "fine-tune (finetune)" if cfg.scoring == "supernet" and cfg.finetune is not None else "supernet's training (supernet)" if cfg.scoring == "supernet" else "training from scratch (final with proxy)"
    console.print(f"[yellow]warning:[/] the best candidate's validation log loss ({min(scores):.4f}) is above that of predicting the training click rate for every row ({base:.4f}): "
                  f"the candidates learnt nothing usable in their {training}, so the search ranked noise; check that training's lr and length")


def _default_pim():
    """Hand-designed baselines are mapped on the default PIM design point (docs/hardware.md)."""
    from recnas.hardware import PIMConfig

    return PIMConfig()


def result_row(name: str, trained: dict, store: CTRStore, costs: dict, device, hardware=None) -> dict:
    """The results-table row of a `fit_selected` result: test metrics, costs and what the grid
    kept; with a PIM configuration also the test log loss the model has when it runs there
    (simulated quantisation): the quality that goes with its PIM costs."""
    model, fit = trained["model"], trained["fit"]
    test = evaluate(model.to(device), store.split("test"), device=device)
    row = {"model": name, "test_logloss": test["logloss"], "test_auc": test["auc"], "train_seconds": fit.get("train_seconds", math.nan), **costs}
    if hardware is not None:
        with quantized(model, hardware):
            row["test_logloss_pim"] = evaluate(model, store.split("test"), device=device)["logloss"]
    bayes = store.meta.bayes or {}
    if "test_logloss" in bayes:
        row["gap_to_bayes"] = test["logloss"] - bayes["test_logloss"]
    return row | selection_fields(trained)

