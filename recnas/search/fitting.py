"""How the job trains one of its models in its run folder, or reuses it from there: `fit_or_load`
(train, go on from a checkpoint, or load the finished model, on the data the folder records),
and `fit_selected`, one selection for the searched model and every baseline (the `final`
recipe at every point of `final_grid`, each followed by its tables-alone phase, the lowest
validation log loss kept)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from recnas.configs import parse_json, read_text
from recnas.data.store import CTRStore
from recnas.errors import CheckpointError, ConfigError, TrainingDiverged
from recnas.hardware.quant import quantized
from recnas.search.job import JobConfig, grid_points, point_tag, recipe
from recnas.search.ranking import nan_last
from recnas.train import Trainer, TrainConfig, evaluate
from recnas.train.checkpoint import OtherLayoutCheckpoint, OtherModelCheckpoint, load_checkpoint, seed_everything
from recnas.train.model_factory import baseline_spec, load_trained, subnet_spec
from recnas.train.resume import ChangedRecipe, PastRequestedSteps, check_same_data
from recnas.train.tables import TableFinetune, freeze_all_but_tables, table_phase_config, weights_digest
from recnas.train.trainer import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, MODEL_FILE


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
                if not (out_dir / CONFIG_FILE).exists() and extra.get("config"):
                    # killed between metrics.json and config.yaml, the trainer's last write: the
                    # model's own config, as the uninterrupted run wrote it (best/ copies it too)
                    TrainConfig.model_validate(extra["config"]).to_yaml(out_dir / CONFIG_FILE)
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
        check_same_data(out_dir / MODEL_FILE, extra["data"], store, OTHER_DATA)
        return
    path = out_dir / CHECKPOINT_FILE
    if path.is_file():
        check_same_data(path, load_checkpoint(path, mmap=True).get("data"), store, OTHER_DATA)


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
        check_same_data(path, saved, store, OTHER_DATA)


def subnet_builder(g, space, meta) -> Callable[[], tuple[torch.nn.Module, dict]]:
    """`build` for fit_or_load: genotype `g`'s architecture as a standalone subnet."""
    from recnas.supernet import Subnet

    return lambda: (Subnet.from_architecture(g.arch, space, meta), subnet_spec(g.arch, space, meta))


def baseline_with_spec(name: str, meta, hparams: dict) -> tuple[torch.nn.Module, dict]:
    """Baseline `name` built on `meta` and its spec: what `baseline_builder` trains, and what
    the job's check of its baselines builds once before any training."""
    from recnas.baselines import build_baseline

    model = build_baseline(name, meta, **hparams)
    return model, baseline_spec(name, model.hparams, meta)


def baseline_builder(name: str, meta, hparams: dict) -> Callable[[], tuple[torch.nn.Module, dict]]:
    """`build` for fit_or_load: baseline `name` with `hparams` over its defaults."""
    return functools.partial(baseline_with_spec, name, meta, hparams)


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


def selection_fields(trained: dict) -> dict:
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


def warn_diverged_points(trained: dict, console: Console) -> None:
    """A warning per `final_grid` point of a `fit_selected` result whose training diverged, and
    per `table_finetune` phase that diverged."""
    for t in trained["grid"]:
        if t.get("diverged"):
            console.print(f"[yellow]warning:[/] {escape(t['diverged'])} (point {t['point']} left out of final_grid's selection)")
        if t.get("table_finetune_diverged"):
            of = f" of point {t['point']}" if t["point"] else ""
            console.print(f"[yellow]warning:[/] {escape(t['table_finetune_diverged'])} (the table_finetune phase{of} not kept: the model from before it stands)")
