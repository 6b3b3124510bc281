"""Which parameters overfit when a trained model sees its training rows again?

Deep CTR models often reach their best validation loss after a few epochs and then get worse
fast at the start of the next pass over the data (the "one-epoch phenomenon", Zhang et al.,
CIKM 2022). This takes a trained model at its best weights (a `model.pt` saved with
`restore_best`) and trains it on for more epochs several times, each time with one group of
parameters frozen. It reports the validation log loss after every epoch, and the test log
loss at the start and where validation says to stop (the best epoch's weights, or the start).
A group whose freezing stops the rise is where the model memorises its training rows.

Groups: `none` (nothing frozen), `tables` (the embedding tables frozen), `dense` (everything but
the tables frozen), or `re:PATTERN` (parameters whose name matches the regular expression
frozen; e.g. `re:dot\\.out` for the dot-product operators' output maps).

    python benchmarks/epoch_overfit.py --data STORE MODEL.pt [--freeze none,tables,dense] \\
        [--config final.yaml] [--epochs 2] [--lr-scale 0.25] [--out F]

`--config` is the recipe the model was trained with (a TrainConfig YAML: optimizer, table
decay, batch size); every run starts a fresh optimizer at `lr * lr-scale` and anneals it to
zero with a cosine over `--epochs`, as the tail of a cosine schedule would: with `--freeze
dense` this is the search job's `table_finetune` phase (recnas.train.tables).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from recnas.configs import validate, write_text_atomic
from recnas.data.store import CTRStore
from recnas.errors import ConfigError
from recnas.scripts import output_file, provenance, run_script
from recnas.train import Trainer, TrainConfig, evaluate, load_trained
from recnas.train.model_factory import check_data
from recnas.train.tables import TableFinetune, table_phase_config
from recnas.train.trainer import embedding_param_ids


def frozen_names(model: torch.nn.Module, group: str) -> set[str]:
    """Names of the parameters `group` freezes (see the module docstring)."""
    tables = embedding_param_ids(model)
    named = list(model.named_parameters())
    if group == "none":
        return set()
    if group == "tables":
        return {n for n, p in named if id(p) in tables}
    if group == "dense":
        return {n for n, p in named if id(p) not in tables}
    if group.startswith("re:"):
        try:
            pattern = re.compile(group[3:])
        except re.error as exc:
            raise ConfigError(f"--freeze {group!r}: not a regular expression ({exc})") from None
        names = {n for n, _ in named if pattern.search(n)}
        if not names:
            raise ConfigError(f"--freeze {group!r} matches no parameter of the model")
        return names
    raise ConfigError(f"--freeze: unknown group {group!r}; use none, tables, dense or re:PATTERN")


def continue_training(model: torch.nn.Module, store: CTRStore, cfg: TrainConfig, group: str, epochs: int, lr_scale: float) -> dict:
    """Freeze `group` of a trained `model` (checked against `store`), train `epochs` more in
    place; validation log loss before and after each epoch."""
    frozen = frozen_names(model, group)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    val, test = store.split("val"), store.split("test")
    history, test_start = [evaluate(model, val)["logloss"]], evaluate(model, test)["logloss"]
    tcfg = table_phase_config(cfg, TableFinetune(epochs=epochs, lr_scale=lr_scale))  # the job's `table_finetune` recipe
    trainer = Trainer(model, tcfg, store, out_dir=None, progress=False)
    fit = trainer.fit()
    history += [h["val_logloss"] for h in fit.history]
    trainable = sum(p.numel() for n, p in model.named_parameters() if n not in frozen)
    # the test log loss where validation says to stop: at the start, or after the best epoch (restored)
    test_best = test_start if history[0] <= min(history[1:]) else evaluate(trainer.model, test)["logloss"]
    return {"group": group, "frozen_params": sum(p.numel() for n, p in model.named_parameters() if n in frozen), "trainable_params": trainable,
            "val_logloss": history, "test_logloss_start": test_start, "test_logloss_best": test_best}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the store the model was trained on")
    ap.add_argument("model", type=Path, help="a trained model.pt (its best weights)")
    ap.add_argument("--freeze", default="none,tables,dense", help="comma-separated groups, one run each (default none,tables,dense)")
    ap.add_argument("--config", type=Path, help="TrainConfig YAML the model trained with (default: the one saved in its checkpoint)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs trained on from the best weights, per group")
    ap.add_argument("--lr-scale", type=float, default=0.25, help="starting lr as a share of the recipe's (default 0.25: two epochs before the end of a 6-epoch cosine)")
    ap.add_argument("--out", type=output_file, default=Path("benchmarks/out/epoch_overfit.json"), help="the result JSON")
    args = ap.parse_args(argv)
    if args.epochs < 1 or not 0 < args.lr_scale <= 1:
        ap.error("--epochs must be positive and --lr-scale in (0, 1]")
    groups = [g for g in args.freeze.split(",") if g]
    if not groups:  # an empty table and a JSON of no runs, after loading the model and the data
        ap.error(f"--freeze {args.freeze!r} names no group; give some of none, tables, dense, re:PATTERN, comma-separated")
    store = CTRStore(args.data)
    probe, spec, extra = load_trained(args.model)
    check_data(spec, store.meta, where=str(args.data))
    if args.config is not None:
        cfg = TrainConfig.from_yaml(args.config)  # a bad file or key: one ConfigError line
    else:
        if not extra.get("config"):
            raise ConfigError(f"{args.model}: no training config saved with the model; pass --config")
        cfg = validate(TrainConfig, extra["config"], f"{args.model}: its saved training config")
    for group in groups:  # every group checked before the first run trains
        frozen_names(probe, group)
    # each run trains its own copy of the loaded weights (the Trainer seeds itself from cfg.seed)
    runs = [continue_training(copy.deepcopy(probe), store, cfg, group, args.epochs, args.lr_scale) for group in groups]
    t = Table(title=f"{args.model}: validation log loss, from its best weights, training on with a group frozen")
    t.add_column("frozen")
    t.add_column("trainable params", justify="right")
    for k in range(args.epochs + 1):
        t.add_column("start" if k == 0 else f"+{k} epoch{'s' if k > 1 else ''}", justify="right")
    t.add_column("test: start", justify="right")
    t.add_column("test: best val", justify="right")
    for r in runs:
        t.add_row(r["group"], f"{r['trainable_params']:,}", *(f"{v:.4f}" for v in r["val_logloss"]), f"{r['test_logloss_start']:.4f}", f"{r['test_logloss_best']:.4f}")
    Console().print(t)
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": str(args.model), "data": str(args.data),
           "epochs": args.epochs, "lr_scale": args.lr_scale, "config": cfg.model_dump(), "runs": runs}
    provenance(out, args, "cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(out, indent=2))
    Console().print(f"-> {args.out}")
    return out


if __name__ == "__main__":
    run_script(main)
