"""CLI: train a supernet, a subnet or a baseline, and evaluate any trained checkpoint.

Every training command shares one path (`_train`): load the store and config, seed, build
the model, run the Trainer into `--out` (model.pt, checkpoint.pt, metrics.json,
config.yaml). Heavy imports happen inside the commands so `recnas --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from recnas.cli.options import DEVICE, OVERWRITE, PROGRESS, SEED, THREADS, device_option
from recnas.cli.paths import path_option
from recnas.errors import ConfigError
from recnas.limits import Device
from recnas.staging import check_parent, exclusive, remove_stale_writes

supernet_app = typer.Typer(no_args_is_help=True)
subnet_app = typer.Typer(no_args_is_help=True)
baseline_app = typer.Typer(no_args_is_help=True)

DATA = path_option(..., "--data", help="prepared dataset directory (recnas data prepare / synth)")
CONFIG = path_option(..., "--config", help="training config YAML (see configs/ and docs/training.md)")
OUT = path_option(..., "--out", help="output directory: model.pt, checkpoint.pt, metrics.json, config.yaml")
RESUME = typer.Option(False, "--resume", help="continue from OUT/checkpoint.pt exactly where it stopped")
# min=1: refused while parsing, naming --steps (the config's own check would name its key max_steps)
STEPS = typer.Option(None, "--steps", min=1, help="override max_steps (total optimizer steps)")
WARMUP = typer.Option(None, "--warmup-steps", min=0, help="override warmup_steps (configs/supernet.yaml, subnet.yaml and baseline.yaml warm up for 1,000 steps, train-tiny.yaml for none: lower it for a shorter --steps)")
NPROC = typer.Option(1, "--nproc", min=1, help="data-parallel processes (one per GPU; gloo on CPU) launched through torchrun")


def _relaunch(nproc: int) -> None:
    """Re-run this very command under torchrun with `nproc` processes, then exit (a failure raises)."""
    from recnas.train.distributed import follow_launcher, launch

    if "WORLD_SIZE" in os.environ:  # a rank of the launched run
        follow_launcher()
        return
    if nproc <= 1:
        return

    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    launch(nproc, argv)
    raise typer.Exit(0)


SPACE = typer.Option("full", "--space", help="search space: full, small, full-tiny, small-tiny, or a space file (a search run's space.yaml)")


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to the `sys.stderr` of each record's moment, not of its creation.
    While the trainer's progress bar is drawn, rich stands in for sys.stderr and prints each
    line above the bar; the stream taken at creation wrote past the bar instead, behind its last
    drawing ("... 0:00:01step 5  epoch 0.71 ..." on one line, a stale bar above every line)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it
        pass


def _setup_logging() -> None:
    """Evaluation lines of the trainer go to stderr (useful when there is no progress bar).
    Under --nproc only rank 0 prints them (each rank would repeat them); warnings and errors
    still come from any rank, since a rank's own failure is seen by it alone."""
    from recnas.train.distributed import launched_rank

    logger = logging.getLogger("recnas")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.setLevel(logging.INFO if launched_rank() == 0 else logging.WARNING)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _fmt(x) -> str:
    from recnas.train.metrics import format_metric

    return format_metric(x)


def _train(data: Path, config: Path, out: Path, resume: bool, overwrite: bool, progress: bool, build: Callable, steps: int | None = None, seed: int | None = None, nproc: int = 1, warmup: int | None = None, threads: int | None = None, device: str | None = None) -> None:
    """Shared training path. `build(store, cfg) -> (model, model_spec, sampler)` runs after seeding.
    Under `nproc` > 1 the checks of config, data and --out run before the relaunch, so their
    errors are printed once, not once per process."""
    from recnas.data.store import CTRStore, check_run_folder, one_class_notes
    from recnas.environment import cpu_threads
    from recnas.train import TrainConfig, Trainer, seed_everything
    from recnas.train.device import resolve_device
    from recnas.train.plan import check_global_batch, planned_steps, refuse_warmup_past, rows_trained_on
    from recnas.train.trainer import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, MODEL_FILE
    from recnas.train.distributed import check_gpus, shutdown

    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    cfg = TrainConfig.from_yaml(config)
    store = CTRStore(data)
    rows = store.meta.rows.get("train", 0)
    check_global_batch(rows_trained_on(cfg, rows), cfg.batch_size, nproc)  # before the processes start
    check_gpus(nproc, resolve_device(device or cfg.device))  # where it will train: --device cpu runs --nproc on the CPU
    total = steps if steps is not None else planned_steps(cfg, rows, max(nproc, 1))
    # before the overrides, whose own check names no flag
    given = f"--warmup-steps {warmup}" if warmup is not None else f"the {cfg.warmup_steps} warmup_steps of {config}"
    if steps is not None:
        length, longer = f"--steps {steps}", "more --steps"
    else:
        length, longer = (f"max_steps of {config}" if cfg.max_steps else f"{cfg.epochs} epochs of {data}"), "train longer"
    refuse_warmup_past(cfg.warmup_steps if warmup is None else warmup, total, given, "this run", length, "--warmup-steps", longer)
    cfg = cfg.with_overrides(source="command line", max_steps=steps, seed=seed, warmup_steps=warmup, device=device)
    out = Path(out)
    check_run_folder(out)
    with exclusive(out):  # held by this process for all ranks of an --nproc run
        if not resume and not overwrite and any((out / f).exists() for f in (CHECKPOINT_FILE, MODEL_FILE)):
            raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or --overwrite to start afresh")
        held = [f for f in (CONFIG_FILE, METRICS_FILE) if (out / f).exists()]
        if not resume and not overwrite and held:  # e.g. the user's own config: it was replaced by the resolved one
            mine = f" (--config {config} is one of them)" if any((out / f).samefile(config) for f in held if Path(config).is_file()) else ""
            raise ConfigError(f"{out} holds {' and '.join(held)} but no training run{mine}; a run writes its own there, replacing them: keep them outside --out, or pass --overwrite to replace them")
        if resume and not (out / CHECKPOINT_FILE).is_file():
            if (out / MODEL_FILE).exists():  # "run without --resume first" was then refused: out holds a run
                raise ConfigError(f"{out / CHECKPOINT_FILE}: nothing to resume; {out} holds a {MODEL_FILE} without the checkpoint that continues its run: pass --overwrite to start afresh")
            raise ConfigError(f"{out / CHECKPOINT_FILE}: nothing to resume; run without --resume first")
        if "WORLD_SIZE" not in os.environ:  # the lock's holder, before any rank starts (a rank's sweep could meet rank 0's live write)
            remove_stale_writes(out)  # a killed run's half-written checkpoint temp files: nothing else removes them
            for note in one_class_notes(store.meta):  # once, not once per rank
                typer.echo(f"warning: {data}: {note}", err=True)
        _relaunch(nproc)
        with cpu_threads(threads):  # the command's alone (a caller in the same process keeps its own)
            seed_everything(cfg.seed)
            model, spec, sampler = build(store, cfg)
            _setup_logging()
            trainer = Trainer(model, cfg, store, out_dir=out, sampler=sampler, model_spec=spec, progress=progress)
            result = trainer.fit(resume=resume)
            shutdown(trainer.dist)
            if not trainer.dist.is_main:
                return
            best = result.best_val or {}
            typer.echo(
                f"trained {result.steps} steps ({result.epochs:g} epochs) in {result.train_seconds:.1f}s, "
                f"{result.samples_per_s:,.0f} samples/s; best val logloss {_fmt(best.get('logloss'))} auc {_fmt(best.get('auc'))}"
                + (" (early stop)" if result.stopped_early else "") + _last_weights(cfg, result)
            )
            typer.echo(f"wrote {out / 'model.pt'}, {out / 'checkpoint.pt'}, {out / 'metrics.json'}, {out / 'config.yaml'}")
            _warn_above_base_rate(best.get("logloss"), store, cfg)


def _warn_above_base_rate(val_logloss, store, cfg) -> None:
    """A warning when even the best validation log loss of a run is above that of predicting
    the training click rate for every row: the model learnt nothing usable. A huge lr leaves
    finite but useless weights (`baseline train lr` at lr 1e4 on 3,000 synthetic rows: train loss
    52,704, validation log loss 13.46 against the click rate's 0.62), which the summary gave as
    one more number, exit 0."""
    from recnas.search.study import above_base_rate, store_base_rate

    if not isinstance(val_logloss, float):
        return
    base = store_base_rate(store, "val", cfg.max_eval_rows)
    if above_base_rate(val_logloss, base):
        typer.echo(f"warning: the best validation log loss ({val_logloss:.5f}) is above that of predicting the training click rate for every row ({base:.5f}): "
                   "the model learnt nothing usable; lower the lr or train longer", err=True)


def _last_weights(cfg, result) -> str:
    """The summary's note when model.pt holds the last weights, not the best (`restore_best:
    false`): the line gave the best validation log loss alone, and `recnas evaluate` of that
    model.pt then gave another (0.92894 against the 0.60129 printed)."""
    last = result.final_val  # of the last step, evaluated at the end of every run
    if cfg.restore_best or not last or (result.best_val or {}).get("step") == result.steps:
        return ""
    return f"; model.pt holds the last weights (restore_best: false): val logloss {_fmt(last.get('logloss'))} auc {_fmt(last.get('auc'))}"


@supernet_app.command("train")
def supernet_train(
    data: Path = DATA,
    config: Path = CONFIG,
    out: Path = OUT,
    space: str = SPACE,
    sampler: str = typer.Option("single-op-any-conn", "--sampler", help="single-path, any-path, single-op-any-conn, farthest-greedy"),
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    steps: Optional[int] = STEPS,
    warmup: Optional[int] = WARMUP,
    seed: Optional[int] = SEED,
    progress: bool = PROGRESS,
    nproc: int = NPROC,
    threads: Optional[int] = THREADS,
    device: Optional[Device] = DEVICE,
) -> None:
    """Train the weight-sharing supernet, one sampled subnet per step."""

    def build(store, cfg):
        from recnas.space import resolve_space
        from recnas.space.samplers import make_sampler
        from recnas.supernet import Supernet
        from recnas.train import supernet_spec

        sp = resolve_space(space)
        return Supernet(sp, store.meta), supernet_spec(sp, store.meta, sampler), make_sampler(sampler, sp, seed=cfg.seed)

    _train(data, config, out, resume, overwrite, progress, build, steps, seed, nproc, warmup, threads, device)


@subnet_app.command("train")
def subnet_train(
    data: Path = DATA,
    arch: Path = path_option(..., "--arch", help="architecture JSON (e.g. from `recnas search`)"),
    config: Path = CONFIG,
    out: Path = OUT,
    space: str = SPACE,
    inherit: Optional[Path] = path_option(None, "--inherit", help="supernet model.pt/checkpoint.pt to inherit weights from"),
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    steps: Optional[int] = STEPS,
    warmup: Optional[int] = WARMUP,
    seed: Optional[int] = SEED,
    progress: bool = PROGRESS,
    nproc: int = NPROC,
    threads: Optional[int] = THREADS,
    device: Optional[Device] = DEVICE,
) -> None:
    """Train one architecture (from scratch, or starting from supernet weights)."""
    if inherit is not None and resume:  # it would be ignored: a resumed run's weights come from its checkpoint
        raise ConfigError("--inherit starts a fresh run from supernet weights; --resume continues from --out's checkpoint.pt: pass one of them")

    def build(store, cfg):
        from recnas.space import resolve_space
        from recnas.space.arch import load_architecture_for
        from recnas.supernet import Subnet
        from recnas.train import subnet_spec

        sp = resolve_space(space)
        a = load_architecture_for(arch, sp, store.meta.n_sparse)
        supernet = _load_supernet(inherit, sp, store.meta) if inherit is not None else None
        return Subnet.from_architecture(a, sp, store.meta, supernet), subnet_spec(a, sp, store.meta), None

    _train(data, config, out, resume, overwrite, progress, build, steps, seed, nproc, warmup, threads, device)


def _load_supernet(path: Path, space, meta):
    from recnas.train.model_factory import check_data, load_trained

    model, spec, _ = load_trained(path)
    if spec.get("kind") != "supernet":
        raise ConfigError(f"{path}: --inherit needs a supernet checkpoint, this one holds a {spec.get('kind')}")
    want = space.blocks_only().spec()  # a CIN head is never in a supernet: the subnet's starts fresh
    if spec["space"] != want:
        differ = sorted(k for k in {**spec["space"], **want} if spec["space"].get(k) != want.get(k))
        raise ConfigError(f"{path}: supernet was trained on another space than {space.name!r} (differs in {', '.join(differ)})")
    check_data(spec, meta, where=str(path))
    return model


@baseline_app.command("train")
def baseline_train(
    name: str = typer.Argument(..., help="lr, dlrm, deepfm, dcnv2, autoint or xdeepfm"),
    data: Path = DATA,
    config: Path = CONFIG,
    out: Path = OUT,
    hparams: Optional[str] = typer.Option(None, "--hparams", help='model hyper-parameters as JSON, e.g. \'{"mlp": [64, 64]}\' for deepfm (each model\'s keys: docs/baselines.md)'),
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    steps: Optional[int] = STEPS,
    warmup: Optional[int] = WARMUP,
    seed: Optional[int] = SEED,
    progress: bool = PROGRESS,
    nproc: int = NPROC,
    threads: Optional[int] = THREADS,
    device: Optional[Device] = DEVICE,
) -> None:
    """Train a hand-designed baseline."""
    from recnas.configs import parse_json

    hp = parse_json(hparams, "--hparams") if hparams else {}
    if not isinstance(hp, dict):
        raise ConfigError("--hparams: expected a JSON object of hyper-parameters")

    def build(store, cfg):
        from recnas.baselines import build_baseline
        from recnas.train import baseline_spec

        model = build_baseline(name, store.meta, **hp)
        return model, baseline_spec(name, model.hparams, store.meta), None

    _train(data, config, out, resume, overwrite, progress, build, steps, seed, nproc, warmup, threads, device)


def _refuse_an_input(path: Path, flag: str, what: str, ckpt: Path, arch: Path | None, data: Path) -> None:
    """An output file (`flag`: --json-out, --predictions-out) must not name a file the command
    reads (the checkpoint, the architecture, a file of the dataset): the metrics used to
    replace it, exit 0, and the input was lost."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give the path of the file to write")
    check_parent(path, flag)
    if data.is_dir() and path.resolve().is_relative_to(data.resolve()):
        raise ConfigError(f"{flag} {path} is a file of the dataset --data {data}; writing the {what} there would replace it")
    from recnas.data.store import check_outside_results

    # any other store, or an embedding search result: a file there blocks its --overwrite
    check_outside_results(path, flag)
    if not path.is_file():
        return
    inputs = [p for p in (ckpt, arch) if p is not None and p.is_file()]
    if any(path.samefile(p) for p in inputs):
        raise ConfigError(f"{flag} {path} is an input of this command; writing the {what} there would replace it")


PREDICTION_FORMATS = (".npy", ".csv")
PREDICTIONS_CSV_HEADER = "p"  # the one column of a .csv of predictions
EVALUATION_KEYS = {"ckpt", "data", "split", "kind", "logloss"}  # of every --json-out record


def _written_by_evaluate(path: Path, flag: str) -> bool:
    """Whether the existing file at `path` is one this command writes for `flag` (a record of
    metrics, or predictions), which a new evaluation may replace as before."""
    try:
        if flag == "--json-out":
            if path.stat().st_size > 1 << 20:  # a record is a few hundred bytes
                return False
            record = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(record, dict) and EVALUATION_KEYS <= set(record)
        if path.suffix == ".npy":
            import numpy as np

            preds = np.load(path, mmap_mode="r", allow_pickle=False)
            return preds.dtype == np.float32 and preds.ndim == 1
        with path.open(encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n") == PREDICTIONS_CSV_HEADER
    except (OSError, ValueError, EOFError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False


def _refuse_to_replace(path: Path, flag: str, what: str) -> None:
    """An existing file at an output path is replaced only if this command wrote it: the
    metrics used to replace any file there, exit 0 (a run's metrics.json, another run's
    checkpoint.pt, a config)."""
    if path.is_file() and not _written_by_evaluate(path, flag):
        raise ConfigError(f"{flag} {path} exists and holds no {what} of `recnas evaluate`; writing the {what} there would replace it: choose another file (or remove that one first)")


def write_predictions(path: Path, probs) -> None:
    """One click probability per row, atomically: `.npy` (float32 [rows]) or `.csv` (header `p`)."""
    import numpy as np

    from recnas.configs import atomic_write

    p = np.asarray(probs, np.float32).reshape(-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        with atomic_write(path, "wb") as fh:
            np.save(fh, p)
    else:
        with atomic_write(path, "w") as fh:
            fh.write(PREDICTIONS_CSV_HEADER + "\n")
            np.savetxt(fh, p, fmt="%.9g")  # 9 significant digits: the float32 read back exactly


def _refuse_nan_logits(logits, model, ckpt: Path, store, split: str) -> None:
    """Logits that are not numbers: "logloss n/a  auc n/a" was printed with exit 0, and
    --predictions-out wrote NaN click probabilities; named instead, with the likely cause
    (weights of a diverged run, or rows of a huge magnitude), and nothing is written."""
    import numpy as np

    from recnas.data.store import huge_dense_note
    from recnas.errors import CheckpointError, DataError
    from recnas.train.trainer import diverged_weights_note

    bad = np.flatnonzero(np.isnan(logits))
    if not len(bad):
        return
    note = diverged_weights_note(model)
    if note is not None:
        raise CheckpointError(f"{ckpt}: {note}: the run that wrote it diverged, and its logits are not numbers; train it again with a lower lr or grad_clip")
    cause = huge_dense_note(store, split)
    raise DataError(f"{ckpt} gives logits that are not numbers on {len(bad):,} of {len(logits):,} rows of the {split} split (row {bad[0]:,} first)" + (f"; {cause}" if cause else ""))


def evaluate(
    ckpt: Path = path_option(..., "--ckpt", help="model.pt or checkpoint.pt written by a training command"),
    data: Path = DATA,
    split: str = typer.Option("test", "--split", help="train, val or test"),
    arch: Optional[Path] = path_option(None, "--arch", help="architecture JSON (required for a supernet checkpoint)"),
    json_out: Optional[Path] = path_option(None, "--json-out", help="also write the metrics as JSON here"),
    predictions_out: Optional[Path] = path_option(None, "--predictions-out", help="write one click probability per row of the split, in row order: FILE.npy (float32) or FILE.csv (header p)"),
    batch_size: int = typer.Option(4096, "--batch-size", min=1, help="rows per forward pass (sets the memory it takes)"),
    device: Device = device_option("auto", "where to evaluate"),
    pim_config: Optional[Path] = path_option(None, "--pim-config", help="a PIM design (a co-design run's best_hardware.json): evaluate at its weight, activation and ADC precision (simulated quantisation), as results.md's test log loss on its PIM config"),
) -> None:
    """Log loss and AUC of a trained checkpoint on one split (and its predictions, if asked)."""
    from recnas import configs
    from recnas.data.store import CTRStore
    from recnas.hardware import PIMConfig
    from recnas.hardware.quant import quantized
    from recnas.train.metrics import ctr_metrics, predict, probabilities
    from recnas.train.model_factory import check_data, load_trained, weights_step
    from recnas.train.device import resolve_device

    # outputs are refused before the evaluation, whose result they would receive
    if json_out is not None:
        _refuse_an_input(json_out, "--json-out", "metrics", ckpt, arch, data)
    if predictions_out is not None:
        _refuse_an_input(predictions_out, "--predictions-out", "predictions", ckpt, arch, data)
        if predictions_out.suffix not in PREDICTION_FORMATS:
            raise ConfigError(f"--predictions-out {predictions_out}: unknown format {predictions_out.suffix or '(no suffix)'}; name a .npy (float32) or .csv (header p) file")
        if json_out is not None and predictions_out.resolve() == json_out.resolve():
            raise ConfigError(f"--predictions-out and --json-out are both {json_out}; give two files")
        _refuse_to_replace(predictions_out, "--predictions-out", "predictions")
    if json_out is not None:
        _refuse_to_replace(json_out, "--json-out", "metrics")
    hardware = configs.load(PIMConfig, pim_config) if pim_config is not None else None  # before the model: a bad file costs no loading
    dev = resolve_device(device)
    store = CTRStore(data)
    model, spec, extra = load_trained(ckpt, map_location=dev)
    check_data(spec, store.meta, where=str(data))
    a = None
    if arch is not None and spec["kind"] != "supernet":  # a subnet or baseline is one fixed model
        raise ConfigError(f"--arch chooses the subnet of a supernet checkpoint; {ckpt} holds a {spec['kind']}, which has one architecture already")
    if spec["kind"] == "supernet":
        if arch is None:
            raise ConfigError(f"{ckpt} holds a supernet: pass --arch to choose the subnet to evaluate")
        from recnas.space import SearchSpace
        from recnas.space.arch import load_architecture_for

        a = load_architecture_for(arch, SearchSpace(**spec["space"]), store.meta.n_sparse)
    with quantized(model.to(dev), hardware):  # hardware None: full precision
        labels, logits = predict(model, store.split(split), arch=a, device=dev, batch_size=batch_size)
    _refuse_nan_logits(logits, model, ckpt, store, split)
    metrics = ctr_metrics(labels, logits)
    if predictions_out is not None:
        write_predictions(predictions_out, probabilities(logits))
    on_pim = f" on the PIM config of {pim_config}" if pim_config is not None else ""
    typer.echo(f"{ckpt} on {split} ({metrics['rows']:,} rows){on_pim}: logloss {_fmt(metrics['logloss'])}  auc {_fmt(metrics['auc'])}")
    if not metrics["rows"]:  # exit 0 with an empty predictions file said nothing of why
        where = {k: v for k, v in store.meta.rows.items() if v}
        typer.echo(f"warning: the {split} split of {data} has no rows" + (f"; its rows are in {', '.join(where)}: pass --split {next(iter(where))}" if where else ""), err=True)
    if json_out is not None:
        record = {"ckpt": str(ckpt), "data": str(data), "split": split, "kind": spec["kind"], "step": weights_step(extra), "run_steps": extra.get("step"),
                  "pim_config": None if hardware is None else hardware.model_dump(), **metrics}
        record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
        json_out.parent.mkdir(parents=True, exist_ok=True)
        configs.write_text_atomic(json_out, json.dumps(record, indent=2))
    if predictions_out is not None:
        typer.echo(f"wrote {metrics['rows']:,} click probabilities to {predictions_out}")
