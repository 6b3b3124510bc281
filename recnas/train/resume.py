"""What may change when a training run is resumed, and what may not: a resume continues one
run, so its checkpoint must be of the same model, data, processes and every setting that decided
the steps already taken (`check_resumable`); only the total may grow. The trainer restores the
state once these checks pass, so a refused resume leaves the checkpoint as it was."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from recnas.errors import CheckpointError
from recnas.train.checkpoint import check_spec

log = logging.getLogger("recnas.train")

# config keys that must not change across a resume: they change which batches or updates follow.
# lr and weight_decay live in the optimizer's state that a resume restores, so a new value would be
# silently ignored (while config.yaml recorded it): refused like the others. warmup_steps and
# lr_schedule decide the lr of the steps already taken: a resume under new ones (a finished run
# "resumed" with --warmup-steps and no more steps) used to record them in config.yaml and
# model.pt for weights trained under the old ones (only the total may change: more steps). So do
# grad_clip and inplace_distill, which decided the updates (objective, clipping) already made
# those the training commands also take as flags (--seed, --warmup-steps): a resume without the
# flag the run was started with is refused naming the key alone, not the flag that sets it
FLAGGED = ("seed", "warmup_steps")
RESUME_INVARIANT = ("optimizer", "batch_size", "seed", "max_train_rows", "embedding_lr", "lr", "weight_decay", "embedding_weight_decay", "warmup_steps", "lr_schedule", "grad_clip", "inplace_distill")


# keys of a store's `source` that only say where its files were (the raw file, the spec, a
# --vocab-from store): a store re-made from a moved file holds the same rows
_WHERE_KEYS = ("path", "spec", "store", "raw_file")


def _without(value, keys: tuple[str, ...]):
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def data_identity(meta, before_profile: bool = False) -> dict:
    """What tells the rows of one store from another's of the same shape (a resume on another
    store went on silently: its first steps on one dataset, the rest on the other): the rows and
    click rate of each split, and a digest of how the store was made (the raw file's checksum
    and the prepare options, the KDD12 profile file's checksum, or the generator's settings),
    without the paths. `before_profile`: the identity a recnas of 2026-12-06..07 recorded,
    which dropped the profile file's record (checksum and all) with its path, so two stores of
    one raw file with other profile files of the same vocabulary sizes looked alike."""
    import hashlib

    source = json.dumps(_without(meta.source, _WHERE_KEYS + (("profile",) if before_profile else ())), sort_keys=True, default=str)
    return {"rows": dict(meta.rows), "positive_rate": dict(meta.positive_rate), "source": hashlib.sha1(source.encode()).hexdigest()[:16]}


def _data_differs(saved: dict, now: dict) -> str:
    """The first difference of two data identities, in words."""
    for key, what in (("rows", "rows per split"), ("positive_rate", "click rate per split")):
        if saved.get(key) != now.get(key):
            return f"{what} {saved.get(key)} there, {now.get(key)} here"
    return "it was made from another raw file or with other options"


def check_same_data(path, saved, store, way_on: str) -> None:
    """Refuse the run of checkpoint `path`, trained on the data of identity `saved`, on other
    data (`store`, a CTRStore; None: nothing to check), saying how it differs and `way_on`.
    Checkpoints without one (written before 2026-12-06) are not checked; ones that recorded the
    identity without the profile file (`data_identity`'s `before_profile`) are checked as
    they were (refusing them would refuse resuming every KDD12 --profile run of those days)."""
    if not isinstance(saved, dict) or store is None:
        return
    now = data_identity(store.meta)
    if saved != now and saved != data_identity(store.meta, before_profile=True):
        raise CheckpointError(f"{path}: the run was trained on another dataset than {store.dir} ({_data_differs(saved, now)}); {way_on}")


def rows_under(cap, rows: int):
    """The rows of a split of `rows` rows that a max_train_rows / max_eval_rows of `cap` uses."""
    return rows if cap is None else min(rows, cap) if isinstance(cap, int) else cap


class ChangedRecipe(CheckpointError):
    """A checkpoint whose run decided its steps already taken under other settings than the ones
    given now (RESUME_INVARIANT, max_eval_rows). Its own class, with the path and what changed,
    so a caller whose way on is not the training command's (`--warmup-steps`, `--overwrite`: a
    search's run folder has neither) can name its own."""

    def __init__(self, message: str, path: str | Path, change: str):
        self.path, self.change = path, change
        super().__init__(message)


class PastRequestedSteps(CheckpointError):
    """A resumed run already past the steps now asked for. Its own class, with the numbers, so a
    caller that offers other ways out than --overwrite (a search's run folder) can say so."""

    def __init__(self, path: str | Path, done: int, total: int):
        self.done, self.total = done, total
        super().__init__(f"{path}: the run is at step {done}, past the {total} steps asked for (max_steps/epochs, --steps); ask for more, or --overwrite to start afresh")


def check_resumable(trainer, p: dict, path) -> None:
    """Refuse (CheckpointError) a checkpoint `p` that `trainer` cannot continue: another model or
    sampler, a changed setting of RESUME_INVARIANT, other data or processes, a run past the steps
    now asked for, other validation rows, or best weights it never kept; say so when it goes to
    another total."""
    check_spec(p["model_spec"], trainer.model_spec if p["model_spec"] else None, path)
    saved_cfg = p.get("config", {})
    train_rows = len(trainer.train_loader.arrays)
    # a max_train_rows past the split's rows is all of them, as none is: the same run (refused as a change)
    clash = [
        k for k in RESUME_INVARIANT if k in saved_cfg
        and (rows_under(saved_cfg[k], train_rows) != rows_under(trainer.cfg.max_train_rows, train_rows) if k == "max_train_rows" else saved_cfg[k] != getattr(trainer.cfg, k))
    ]
    if clash:
        detail = ", ".join(f"{k}: {saved_cfg[k]!r} -> {getattr(trainer.cfg, k)!r}" for k in clash)
        flags = [f"--{k.replace('_', '-')} {saved_cfg[k]}" for k in clash if k in FLAGGED and saved_cfg[k] is not None]
        hint = f"; resume it with {' '.join(flags)} on the training command's line" if flags else ""
        raise ChangedRecipe(f"{path}: cannot resume with a changed config ({detail}){hint}", path, detail)
    check_same_data(path, p.get("data"), trainer.store, "resume it on the data it was trained on, or start afresh (--overwrite)")
    world = p.get("world_size")  # absent from older checkpoints: not checked
    if isinstance(world, int) and world != trainer.dist.world_size:  # like batch_size: the global batch, so the rows that follow
        raise CheckpointError(
            f"{path}: the run was trained in {world} process{'es' if world > 1 else ''} and would resume in {trainer.dist.world_size}; "
            f"a step's global batch is batch_size x processes, so other rows and updates would follow: resume with --nproc {world}"
        )
    done = p.get("step")
    if isinstance(done, int) and done > trainer.total_steps:  # the run cannot go back: the lower step count would be ignored
        raise PastRequestedSteps(path, done, trainer.total_steps)
    if (p.get("sampler") is None) != (trainer.sampler is None):
        raise CheckpointError(f"{path}: checkpoint was trained {'without' if p.get('sampler') is None else 'with'} an architecture sampler")
    _note_new_total(trainer, saved_cfg, done)
    _note_other_threads(trainer, p.get("cpu_threads"))
    _note_other_kernels(trainer, p.get("cpu_capability"))
    best = p.get("best")
    _check_eval_rows(trainer, saved_cfg, best, path)
    if trainer.cfg.restore_best and p.get("best_model") is None and isinstance(best, dict) and isinstance(best.get("val"), dict):
        # trained under restore_best: false, the run kept no weights of its best evaluation:
        # it would be reported as the best and the last weights written as if they were its
        raise CheckpointError(
            f"{path}: the run was trained with restore_best: false and kept no weights of its best evaluation "
            f"(step {best['val'].get('step')}); resume it with restore_best: false, or start afresh (--overwrite)"
        )


def _note_new_total(trainer, saved_cfg: dict, done) -> None:
    """Say so when a resumed run goes to another total than the one it was started for
    (more --steps or epochs, on purpose, or a resume without the --steps it was started
    with): the total changed without a word, and with it the rest of a decaying lr schedule."""
    max_steps, epochs = saved_cfg.get("max_steps"), saved_cfg.get("epochs")
    planned = max_steps if isinstance(max_steps, int) else epochs * trainer.steps_per_epoch if isinstance(epochs, int) else None
    if planned is None or planned == trainer.total_steps or not isinstance(done, int):
        return
    schedule = "" if trainer.cfg.lr_schedule == "constant" else f"; its {trainer.cfg.lr_schedule} lr schedule now runs to step {trainer.total_steps:,}"
    log.info("resuming at step %s of %s: the checkpoint's run was to end at step %s (the config or --steps sets another total now)%s", f"{done:,}", f"{trainer.total_steps:,}", f"{planned:,}", schedule)


def _note_other_threads(trainer, saved) -> None:
    """Warn when a CPU run resumes with another thread count than its checkpoint's steps ran
    with: that count rounds every sum, so the run goes on as neither count would train it,
    while metrics.json records the new one alone (it resumed silently)."""
    import torch

    now = torch.get_num_threads()
    if trainer.device.type == "cpu" and isinstance(saved, int) and saved != now:
        log.warning("resuming with %d CPU threads; the checkpoint's steps ran with %d, and the thread count changes the rounding: "
                    "the run ends as neither count trains it from the start (--threads %d continues it as it was)", now, saved, saved)


def _note_other_kernels(trainer, saved) -> None:
    """Warn when a CPU run resumes on a CPU for which PyTorch picks other kernels (AVX512, AVX2,
    ...) than its checkpoint's steps ran with: they add up in another order, as another thread
    count does (the same code, data and threads gave another default job on another CPU,
    docs/benchmarks.md "2026-12-07: the default job re-run"). Checkpoints record it since then."""
    import torch

    now = torch.backends.cpu.get_cpu_capability()
    if trainer.device.type == "cpu" and isinstance(saved, str) and saved != now:
        log.warning("resuming on a CPU with PyTorch's %s kernels; the checkpoint's steps ran with its %s kernels, which round differently: "
                    "the run ends as neither machine trains it from the start", now, saved)


def _check_eval_rows(trainer, saved_cfg: dict, best, path) -> None:
    """Refuse to resume a run that has evaluated on other validation rows (another
    max_eval_rows): its best evaluation, which every later one is compared with (restore_best,
    early stopping), would be of other rows, and the comparison meaningless."""
    if trainer.val_loader is None or not isinstance(best, dict) or not isinstance(best.get("val"), dict) or "max_eval_rows" not in saved_cfg:
        return
    rows, cap = len(trainer.val_loader.arrays), saved_cfg["max_eval_rows"]
    before, now = rows_under(cap, rows), rows_under(trainer.cfg.max_eval_rows, rows)  # a cap past the split's rows is all of them
    if before != now:
        change = f"max_eval_rows: {cap!r} -> {trainer.cfg.max_eval_rows!r}"
        raise ChangedRecipe(
            f"{path}: cannot resume with a changed config ({change}): the run's evaluations "
            f"were on {before:,} validation rows, this one's would be on {now:,}, and its best one (which later ones are "
            "compared with) would be of other rows; resume with the same max_eval_rows, or start afresh (--overwrite)",
            path, change,
        )
