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
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from recnas.configs import parse_json, read_text, require_type, write_text_atomic
from recnas.data.store import CTRStore, check_outside_results, check_run_folder, huge_dense_note, one_class_notes
from recnas.environment import cpu_threads, environment, tf32_matmuls
from recnas.errors import CheckpointError, ConfigError, DataError, RecnasError, TrainingDiverged
from recnas.hardware.quant import quantized
from recnas.search.evaluator import CandidateEvaluator, architecture_costs, model_costs
from recnas.search.evolution import RegularizedEvolution
from recnas.search.halving import successive_halving
from recnas.search.job import JobConfig, check_same_run, decays_every_table, dump_config, grid_points, point_tag, recipe
from recnas.search.objective import diverged_keys, format_targets, resolve_targets
from recnas.search.ranking import is_score, nan_last
from recnas.search.report import PARETO_FILES, write_report
from recnas.search.results import ResultsStore
from recnas.space import get_space
from recnas.space.arch import check_emb_dims
from recnas.space.samplers import make_sampler
from recnas.staging import check_writable, copy_dir, exclusive, remove_stale_writes
from recnas.train import Trainer, TrainConfig, evaluate
from recnas.train.checkpoint import OtherLayoutCheckpoint, OtherModelCheckpoint, load_checkpoint, seed_everything
from recnas.train.model_factory import SupernetOfOtherPaths, baseline_spec, load_trained, subnet_spec, supernet_spec
from recnas.train.tables import TableFinetune, freeze_all_but_tables, table_phase_config, weights_digest
from recnas.train.metrics import counted
from recnas.train.resume import ChangedRecipe, PastRequestedSteps, check_same_data, data_identity
from recnas.train.trainer import CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE


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


def fit_or_load(build: Callable[[], tuple[torch.nn.Module, dict]], tcfg, store, out_dir: Path, progress: bool, sampler=None, hardware=None, stop_after_evals: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Train into `out_dir` (resuming a checkpoint there), or load the finished model. With a
    PIM configuration (`hardware`) the training is quantisation-aware on it. `stop_after_evals=k`
    pauses (checkpointed, `interrupted` in the result) after the k-th evaluation interval.

    `build() -> (model, model_spec)` makes the untrained model right after seeding with the
    training seed (as the CLI's training path does), so its initial weights depend on that seed
    alone, not on what ran earlier in the process: the same job gives the same models, and a
    resumed job the same as an uninterrupted one. A finished model's metrics are read from its
    model.pt (written atomically with the weights); metrics.json is the copy for people.

    A finished model is only reused when it is the model and training recipe asked for now (a
    re-run with other `final` settings or baseline hyper-parameters): otherwise the run goes on
    from its checkpoint as `--resume` would, which trains on under a longer recipe and refuses
    another model, instead of reporting the old model under the new config.
    """
    seed_everything(tcfg.seed)
    model, spec = build()
    try:
        if (out_dir / MODEL_FILE).exists() and (out_dir / METRICS_FILE).exists():
            done, done_spec, extra = load_trained(out_dir / MODEL_FILE)
            if done_spec == spec and recipe(extra.get("config", {})) == recipe(tcfg.model_dump()):
                check_trained_on(out_dir, store, extra)
                return done, extra["metrics"]
        run_context = None if hardware is None else functools.partial(quantized, config=hardware)
        trainer = Trainer(model, tcfg, store, out_dir=out_dir, sampler=sampler, model_spec=spec, progress=progress, run_context=run_context)
        stop_after = None if stop_after_evals is None else stop_after_evals * trainer.eval_every
        result = trainer.fit(resume=(out_dir / CHECKPOINT_FILE).exists(), stop_after=stop_after)
    except OtherLayoutCheckpoint as exc:  # a run folder from an older recnas: "train the model again" said neither where nor how
        raise CheckpointError(f"{exc.problem}; {_afresh(out_dir, sampler)}") from None
    except TrainingDiverged as exc:  # which of the job's models (a finalist, a grid point, a baseline) it was
        raise TrainingDiverged(f"{out_dir}: {exc}") from None
    except OtherModelCheckpoint as exc:  # e.g. other baseline_hparams, or a preset a recnas upgrade changed
        raise ConfigError(
            f"{exc}: the run folder's model there was built with other settings than this job's; "
            f"give the job another --out, or delete {out_dir} to train that model afresh"
        ) from None
    except ChangedRecipe as exc:
        # the trainer's ways out (`--warmup-steps 0` "on the training command's line", --overwrite)
        # are not `recnas search`'s: a continued job with another final lr or warmup, or another
        # table_finetune lr_scale, was told to pass flags the job does not have
        if sampler is not None:
            raise ConfigError(f"{exc.path}: cannot go on with a changed recipe ({exc.change}); {_afresh(out_dir, sampler)}") from None
        raise ConfigError(f"{exc.path}: cannot go on with a changed recipe ({exc.change}), which decided the steps this model has taken; set it back, {_afresh(out_dir, sampler)}") from None
    except PastRequestedSteps as exc:  # the trainer's way out, --overwrite, is not one `recnas search` has
        raise ConfigError(
            f"{out_dir}: this model is trained to step {exc.done}, past the {exc.total} steps its recipe now asks for "
            "(max_steps/epochs); a run folder's models train on, never back: ask for as many steps, or use another --out"
        ) from None
    # the last step's gradients: as large as the weights (the tables' are dense), and no use to
    # what follows (scoring candidates on a supernet, evaluating a model; a training step sets
    # them afresh), which held them for the rest of the job
    trainer.optimizer.zero_grad(set_to_none=True)
    return trainer.model, result.to_dict()


OTHER_DATA = "the run folder's models and scores come from that data: give the job another --out, or run it on that data"
DATA_FILE = "data.json"  # the identity of the rows a run folder's models and scores come from


def _afresh(out_dir: Path, sampler) -> str:
    """How the job trains a model of its run folder afresh: the supernet (the one trained with a
    `sampler`) only in another --out, since the run's stored candidate scores come from it and
    would stay; any other model by deleting its folder, or in another --out."""
    if sampler is not None:
        return "give the job another --out, where it trains its supernet and every model afresh"
    return f"delete {out_dir} to have the job train that model afresh, or give the job another --out"


def check_trained_on(out_dir: Path, store: CTRStore, extra: dict | None = None) -> None:
    """A finished model is reused only on the data it was trained on, which its model.pt records
    (`extra`, as `load_trained` returns it), or, for a model.pt written before it did, its
    checkpoint.pt (read whole, optimizer state included, for that one record). The model spec
    holds the data's shape alone: a store made again in place with another split `--seed` (same
    path, shape and vocabulary) went on silently, reporting a searched model on test rows that it
    had trained on, beside baselines trained on the new split. (A run folder's `data.json`
    catches that at the start; this covers folders made before it.)"""
    if isinstance((extra or {}).get("data"), dict):
        check_same_data(out_dir / MODEL_FILE, extra["data"], store.meta, store.dir, OTHER_DATA)
        return
    path = out_dir / CHECKPOINT_FILE
    if path.is_file():
        check_same_data(path, load_checkpoint(path, mmap=True).get("data"), store.meta, store.dir, OTHER_DATA)


def check_run_data(out: Path, store: CTRStore) -> None:
    """A continued run on the rows its first start recorded in `data.json`, checked before any
    work: the config names the store by path alone, so a store made again in place with other
    rows reused the stored candidate scores (scored from scratch: nothing else records their
    data) and the supernet, and was refused only at a finished model, if one was reached."""
    path = out / DATA_FILE
    if path.is_file():
        saved = parse_json(read_text(path, "the run's data record"), str(path))
        if not isinstance(saved, dict):  # edited or damaged: the check would pass without a word
            raise ConfigError(f"{path}: not the record of a run's data (a JSON object); use another --out")
        check_same_data(path, saved, store.meta, store.dir, OTHER_DATA)


def rung_score(history: list[dict], rung: int) -> float:
    """Best validation log loss of the first `rung` evaluations. A resumed job finds finalists
    already past this rung (or finished): their later evaluations must not count, so the
    replayed halving ranks exactly as the uninterrupted one did. Evaluations that are not a
    number (NaN logits: NaN in a fresh result, None in a finished model.pt's) are skipped, and
    NaN stands for a rung without any: `min` failed on two Nones, and returned NaN, whatever
    followed, on a NaN first."""
    values = [h["val_logloss"] for h in history[:rung]]
    numbers = [v for v in values if is_score(v)]
    return min(numbers) if numbers else math.nan


def subnet_builder(g, space, meta) -> Callable[[], tuple[torch.nn.Module, dict]]:
    """`build` for fit_or_load: genotype `g`'s architecture as a standalone subnet."""
    from recnas.supernet import Subnet

    return lambda: (Subnet.from_architecture(g.arch, space, meta), subnet_spec(g.arch, space, meta))


def _baseline_with_spec(name: str, meta, hparams: dict) -> tuple[torch.nn.Module, dict]:
    from recnas.baselines import build_baseline

    model = build_baseline(name, meta, **hparams)
    return model, baseline_spec(name, model.hparams, meta)


def baseline_builder(name: str, meta, hparams: dict) -> Callable[[], tuple[torch.nn.Module, dict]]:
    """`build` for fit_or_load: baseline `name` with `hparams` over its defaults."""
    return functools.partial(_baseline_with_spec, name, meta, hparams)


def check_baselines(cfg: JobConfig, meta) -> None:
    """Build every baseline of the job (and its objective's reference) once before any training:
    one that cannot be built on this data (dlrm's dot interaction with one categorical field and
    no dense features, any baseline without categorical fields) used to fail only after the
    supernet, the search and the retrain. What a build checks depends on the fields, not on their
    vocabulary sizes, so each is built with one-row tables: no memory for the real ones."""
    from recnas.train.trainer import check_batch_norm, train_batch_rows

    small = meta.model_copy(update={"vocab_sizes": [1] * len(meta.vocab_sizes)})
    # the fewest rows a training batch of the job's final recipe has (a baseline with batch_norm needs 2)
    rows = min(train_batch_rows(cfg.final_config(point), meta.rows.get("train", 0)) for point in grid_points(cfg.final_grid))
    for name in dict.fromkeys([*cfg.baselines, *([cfg.objective.reference] if cfg.objective.reference else [])]):
        try:
            model, _ = _baseline_with_spec(name, small, cfg.baseline_hparams.get(name, {}))
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
    from recnas.train.trainer import check_runs_here

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


def _stage(console: Console, name: str, detail: str = "") -> None:
    console.print(f"[bold cyan]==>[/] [bold]{name}[/] {detail}")


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

        _stage(console, "supernet", f"space={space.name} blocks={space.n_blocks} sampler={cfg.sampler}{_earlier(out / 'supernet')}")
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
        _stage(console, "supernet", f"none: scoring: scratch trains every candidate from scratch ({_budget(score_cfg)})")

    # 2. evolution
    codesign = cfg.hardware == "pim"
    _stage(console, "search", f"regularized evolution: population {cfg.evolution.population}, {counted(cfg.evolution.generations, 'generation')}, objective {objective.kind}")
    if objective.reference is not None:
        console.print("    targets (" + objective.reference + " / ratios): " + format_targets(objective.targets))
    results = ResultsStore(out / "search.sqlite")
    evaluator = CandidateEvaluator(space, store, score_cfg, cfg.eval_rows, device, supernet=supernet) if stale is None else _refuse_scoring(stale)
    executor = None
    if cfg.executor == "ray" and stale is None:
        from recnas.search.executors import RayExecutor

        executor = RayExecutor(space, store.dir, score_cfg, cfg.eval_rows, None if supernet is None else out / "supernet" / MODEL_FILE, cfg.ray_workers, cfg.ray_address)
    evo = RegularizedEvolution(space, evaluator, results, cfg.evolution, objective, codesign=codesign, evaluate_many=executor, emb_dims=emb_dims, pim_choices=cfg.pim_choices)
    with _progress(progress, console) as bar:
        task = bar.add_task("generations", total=cfg.evolution.generations)
        evo_result = evo.run(lambda g, n: bar.update(task, completed=g))
    if executor is not None:
        executor.shutdown()
    console.print(f"    best candidate {evo_result.best.key}: val log loss {evo_result.best_metrics['logloss']:.4f} ({how}), {evo_result.evaluated} evaluated this run, {len(results)} in store")
    _warn_diverged(evo_result.history, cfg, console)
    _warn_above_base_rate(evo_result.history, cfg, store, console)

    # 3. the winner, from scratch: the best `finalists` by search score, chosen by validation
    # (all trained to the end, or by successive halving)
    ranked, archs = [], set()
    for key, score in evo_result.ranked():  # distinct architectures: in co-design one arch comes with many PIM configs
        if len(ranked) == cfg.finalists:
            break
        if (g := evo.genotype(key)).arch.hash not in archs:
            archs.add(g.arch.hash)
            ranked.append((key, score, g))
    dropped, reserve = [], []
    if cfg.finalist_selection == "halving" and len(ranked) > 1:
        _stage(console, "retrain", f"{len(ranked)} finalists by successive halving: each rung trains the better half one more evaluation interval" + _fewer(ranked, cfg))
        survivor, dropped = _halve(ranked, cfg, space, store, out / "finalists", progress, console)
        console.print("    dropped " + ", ".join(f"{d['key']} (rung {d['rung']}, " + ("diverged" if "diverged" in d else f"val {d['val_logloss']:.4f}") + ")" for d in dropped))
        to_train = [r for r in ranked if r[0] == survivor]
        # where the survivor diverges while training on to the end, the dropped that trained
        # furthest (the best of them first) go on in its place: it used to end the job
        reserve = sorted((d for d in dropped if isinstance(d["val_logloss"], float) and math.isfinite(d["val_logloss"])), key=lambda d: (-d["rung"], d["val_logloss"]))
    else:
        points = len(grid_points(cfg.final_grid))
        grid = (f", at each of the {points} points of final_grid" if points > 1 else ", at the one point of final_grid") if cfg.final_grid else ""
        _stage(console, "retrain", ("the best architecture from scratch" if len(ranked) == 1 else f"the best {len(ranked)} architectures from scratch") + grid + ("" if len(ranked) == 1 and points == 1 else "; the lowest validation log loss wins") + _fewer(ranked, cfg))
        to_train = ranked
    finalists, queue, tried = [], list(to_train), 0
    while queue:
        key, score, g = queue.pop(0)
        tried += 1
        # best/ is only ever a copy of the winner: a run continued with fewer finalists or without
        # its final_grid used to resume training in a best/ that held another model or recipe
        folder = out / "finalists" / key
        if not cfg.final_grid and _adopt_earlier_best(out, folder, subnet_spec(g.arch, space, meta)):
            console.print(f"    {key}: going on from best/, where a recnas before 2026-12-03 trained it (now in finalists/{key})")
        try:
            fit = fit_selected(subnet_builder(g, space, meta), cfg, store, folder, progress, device, hardware=g.hardware)
        except TrainingDiverged as exc:
            # one of several finalists that cannot train on the final recipe: the others are still
            # a selection (it used to end the job after its search, and again when continued)
            if len(to_train) == 1 and tried == 1 and not reserve:
                raise
            console.print(f"[yellow]warning:[/] finalist {key} left out: {escape(str(exc))}")
            dropped.append({"key": key, "search_score": score, "val_logloss": math.inf, "diverged": str(exc)})
            if reserve:
                instead = reserve.pop(0)
                dropped.remove(instead)
                queue.append(next(r for r in ranked if r[0] == instead["key"]))
                console.print(f"    going on with {instead['key']} instead (dropped at rung {instead['rung']}, val {instead['val_logloss']:.4f})")
            continue
        _warn_diverged_points(fit, console)
        finalists.append({"key": key, "genotype": g, "search_score": score, **fit})
    if not finalists:
        raise TrainingDiverged(f"every finalist ({tried}) diverged in its final training; the last: {dropped[-1]['diverged']}")
    chosen = best_finalist(finalists)
    # whole: never half-copied, never mixed with an older best/, nor with the other models kept inside
    # the winner's folder (its table phase when not kept, points of an earlier final_grid)
    copy_dir(chosen["folder"], out / "best", ignore=_other_models)
    best = chosen["genotype"]
    best.arch.save(out / "best_arch.json")
    if best.hardware is not None:
        write_text_atomic(out / "best_hardware.json", best.hardware_json)
    if len(finalists) > 1:
        console.print(f"    chose {best.key}: val log loss {chosen['val_logloss']:.4f} (" + ", ".join(f"{f['key']} {f['val_logloss']:.4f}" for f in finalists if f is not chosen) + ")")
    rows = []
    costs = architecture_costs(best.arch, space, meta, best.hardware)
    rows.append(result_row("recnas (searched)", chosen, store, costs, device, best.hardware))

    # 4. baselines under the same training budget
    for name in cfg.baselines:
        _stage(console, "baseline", name)
        trained = fit_selected(baseline_builder(name, meta, cfg.baseline_hparams.get(name, {})), cfg, store, out / "baselines" / name, progress, device, validate=False)
        _warn_diverged_points(trained, console)
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
        "finalists": [{"key": f["key"], "search_score": f["search_score"], "val_logloss": f["val_logloss"], "chosen": f is chosen, **_selection_fields(f)} for f in finalists]
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


def _adopt_earlier_best(out: Path, folder: Path, spec: dict) -> bool:
    """A recnas before 2026-12-03 trained a job's one finalist (without a final_grid) in best/
    itself: continued, the job trained the winner again from scratch in finalists/<key> (hours
    at the gpu budget; an interrupted one's steps lost) and replaced the best/ it had with that.
    Such a best/ (no finalists/ beside it) holding this finalist's model, by its model_spec,
    is copied in as the finalist's folder, to be reused or trained on. True when it was."""
    best = out / "best"
    if folder.exists() or (out / "finalists").exists():
        return False
    held = next((best / name for name in (MODEL_FILE, CHECKPOINT_FILE) if (best / name).is_file()), None)
    if held is None:
        return False
    try:
        if load_checkpoint(held, mmap=True)["model_spec"] != spec:
            return False
    except CheckpointError:  # not to be taken on: trained afresh, as before
        return False
    copy_dir(best, folder)
    return True


def _refuse_scoring(stale: SupernetOfOtherPaths) -> Callable:
    """The evolution's scorer where the run's supernet is of a recnas that drew other subnets from
    it: the stored candidates are reported as scored then, a candidate still to score stops the job."""

    def refuse(geno):
        raise CheckpointError(f"{stale.problem}; this run has candidates left to score on it: give the job another --out, where it trains its supernet afresh")

    return refuse


def _fewer(ranked: list, cfg: JobConfig) -> str:
    """The stage line's note when the search scored fewer distinct architectures than `finalists`."""
    if len(ranked) >= cfg.finalists:
        return ""
    return f" (finalists: {cfg.finalists}, but the search scored only {counted(len(ranked), 'distinct architecture')})"


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


def _other_models(folder: str, names: list[str]) -> list[str]:
    """For `copy_dir`: the subfolders of a model's folder that hold models of their own (a
    `tables-<digest>` phase, a `final_grid` point), which best/ must not carry as the winner's."""
    return [n for n in names if any((Path(folder) / n / f).exists() for f in (MODEL_FILE, CHECKPOINT_FILE))]


def best_finalist(finalists: list[dict]) -> dict:
    """The finalist of the lowest validation log loss; one that is not a number (NaN logits)
    last: `min` returned a NaN one that came first."""
    return min(finalists, key=lambda f: nan_last(f["val_logloss"]))


def fit_selected(build: Callable[[], tuple[torch.nn.Module, dict]], cfg: JobConfig, store: CTRStore, folder: Path, progress: bool, device, hardware=None, validate: bool = True) -> dict:
    """Train a model from scratch with the `final` recipe at every point of `final_grid` (each in
    `folder/<point>`; without a grid in `folder` itself) and keep the lowest validation log loss:
    one selection for the searched model and every baseline, so none is compared at a learning
    rate that suits only the others. Returns model, fit metrics, validation log loss, the point,
    the folder it trained in and every point's validation log loss. Models that lose go back to
    the CPU, freeing the device for the next point. Without `validate` the validation pass runs
    only when a grid or `table_finetune` needs it (a baseline's is reported nowhere else; its
    log loss is then NaN). With `table_finetune` each point's model goes on to train its tables
    alone, and the lower of the two validation log losses stands for the point."""
    points = grid_points(cfg.final_grid)
    best, tried, diverged = None, [], None
    for point in points:
        tcfg = cfg.final_config(point)
        where = folder / point_tag(point) if point else folder
        try:
            model, fit = fit_or_load(build, tcfg, store, where, progress, hardware=hardware)
        except TrainingDiverged as exc:
            # a grid tries settings of which some may not suit every model (an lr too high for
            # one): such a point ended the whole job, and a re-run diverged again from its checkpoint
            if len(points) == 1:
                raise
            diverged = exc
            tried.append({"point": point_tag(point), "val_logloss": math.inf, "train_seconds": math.nan, "diverged": str(exc)})
            continue
        val = math.nan
        if validate or len(points) > 1 or cfg.table_finetune is not None:
            val = _val_logloss(model, store, device, hardware)
        if cfg.table_finetune is not None:
            model, fit, val, where = train_tables_alone(build, model, fit, val, tcfg, cfg.table_finetune, store, where, progress, device, hardware)
        tried.append({"point": point_tag(point), "val_logloss": val, "train_seconds": fit.get("train_seconds", math.nan)})
        if (phase := fit.get("table_finetune", {})).get("diverged"):
            tried[-1]["table_finetune_diverged"] = phase["diverged"]
        if best is None or nan_last(val) < nan_last(best["val_logloss"]):  # a NaN first point used to stay the best
            if best is not None:
                best["model"].cpu()
            best = {"model": model, "fit": fit, "val_logloss": val, "point": point, "folder": where}
        else:
            model.cpu()
    if best is None:
        raise TrainingDiverged(f"every final_grid point diverged; the last: {diverged}")
    return {**best, "grid": tried}


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


def _warn_diverged_points(trained: dict, console: Console) -> None:
    """A warning per `final_grid` point of a `fit_selected` result whose training diverged, and
    per `table_finetune` phase that diverged."""
    for t in trained["grid"]:
        if t.get("diverged"):
            console.print(f"[yellow]warning:[/] {escape(t['diverged'])} (point {t['point']} left out of final_grid's selection)")
        if t.get("table_finetune_diverged"):
            of = f" of point {t['point']}" if t["point"] else ""
            console.print(f"[yellow]warning:[/] {escape(t['table_finetune_diverged'])} (the table_finetune phase{of} not kept: the model from before it stands)")


def _val_logloss(model, store: CTRStore, device, hardware=None) -> float:
    with quantized(model.to(device), hardware):  # co-design: judged as it runs on its PIM config
        return evaluate(model, store.split("val"), device=device)["logloss"]


def train_tables_alone(build, model, fit: dict, val: float, tcfg: TrainConfig, phase: TableFinetune, store: CTRStore, folder: Path, progress: bool, device, hardware=None) -> tuple:
    """The `table_finetune` phase (recnas.train.tables) of a trained `model` whose validation log
    loss is `val`, in `folder/tables-<digest of its weights>`: the tuned model when it validates
    lower, else `model`, with its validation log loss and folder (best/ copies the winner's).
    `fit` gains the phase's record and its train time. A phase that diverges leaves `model`
    (its record has the error under `diverged`)."""

    def from_trained():
        fresh, spec = build()  # the spec, and a model of the right shape for the trained weights
        fresh.load_state_dict(model.state_dict())
        freeze_all_but_tables(fresh)
        return fresh, spec

    where = folder / f"tables-{weights_digest(model)}"
    try:
        tuned, tuned_fit = fit_or_load(from_trained, table_phase_config(tcfg, phase), store, where, progress, hardware=hardware)
    except TrainingDiverged as exc:
        # the phase only ever replaces the model with one that validates lower: a diverged one is
        # not kept, as a worse one is not (it used to end the job, or drop the whole finalist)
        record = {"val_before": val, "val_after": math.inf, "kept": False, "train_seconds": math.nan, "diverged": str(exc)}
        return model, {**fit, "table_finetune": record}, val, folder
    tuned.requires_grad_(True)  # as a model loaded from its model.pt is, so a re-run reports the very same numbers
    tuned_val = _val_logloss(tuned, store, device, hardware)
    kept = tuned_val < val
    record = {"val_before": val, "val_after": tuned_val, "kept": kept, "train_seconds": tuned_fit.get("train_seconds", math.nan)}
    fit = {**fit, "train_seconds": fit.get("train_seconds", math.nan) + record["train_seconds"], "table_finetune": record}
    if kept:
        model.cpu()
        return tuned, fit, tuned_val, where
    tuned.cpu()
    return model, fit, val, folder


def _selection_fields(trained: dict) -> dict:
    """What a report records of a `final_grid` selection (nothing without a grid): the point
    kept, and every point's validation log loss and train time (the row's `train_seconds` is
    the kept point's alone); and of a `table_finetune`, the validation log loss before and
    after it and whether it was kept."""
    fields = {"final_choice": point_tag(trained["point"]), "grid": trained["grid"]} if trained["point"] else {}
    if "table_finetune" in trained["fit"]:
        t = trained["fit"]["table_finetune"]
        fields["table_finetune"] = t
        fields["tables_alone"] = "diverged, not kept" if t.get("diverged") else f"{t['val_after'] - t['val_before']:+.4f}, " + ("kept" if t["kept"] else "not kept")
    return fields


def _halve(ranked: list[tuple], cfg: JobConfig, space, store: CTRStore, folder: Path, progress: bool, console: Console) -> tuple[str, list[dict]]:
    """Successive halving of the (key, search score, genotype) finalists, each trained in
    `folder/<key>`; returns the survivor's key and the dropped finalists' records. A finalist
    whose training diverges in a rung is dropped there with a warning (its record has the error
    under `diverged`); where every finalist diverges the job ends with the last error."""
    by_key = {key: (score, g) for key, score, g in ranked}
    diverged = {}

    def advance(key: str, rung: int) -> float:
        g = by_key[key][1]
        try:
            _, fit = fit_or_load(subnet_builder(g, space, store.meta), cfg.final, store, folder / key, progress, hardware=g.hardware, stop_after_evals=rung)
        except TrainingDiverged as exc:
            # one finalist that cannot train on the final recipe: it used to end the job after its
            # search (and again when continued), as a finalist trained to the end no longer does
            diverged[key] = str(exc)
            console.print(f"[yellow]warning:[/] finalist {key} left out at rung {rung}: {escape(str(exc))}")
            return math.inf
        return rung_score(fit["history"], rung)

    survivor, dropped = successive_halving([key for key, _, _ in ranked], advance)
    if survivor is None:
        raise TrainingDiverged(f"every finalist ({len(ranked)}) diverged in successive halving; the last: {list(diverged.values())[-1]}")
    return survivor, [{**d, "search_score": by_key[d["key"]][0], **({"diverged": diverged[d["key"]]} if d["key"] in diverged else {})} for d in dropped]


def _default_pim():
    """Hand-designed baselines are mapped on the default PIM design point (docs/hardware.md)."""
    from recnas.hardware import PIMConfig

    return PIMConfig()


def _progress(enabled: bool, console: Console) -> Progress:
    # only where it can be drawn and erased: piped (or TERM=dumb) the transient bar left a blank line in the log
    return Progress(TextColumn("    {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console, disable=not (enabled and console.is_interactive), transient=True)


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
    return row | _selection_fields(trained)

