"""The training loop shared by supernets, subnets and baselines.

One loop: a plain model is called as ``model(dense, sparse)``; when a sampler is given (a
supernet) every step is ``model(dense, sparse, sampler.sample())``. Everything the loop's
future depends on (weights, optimizer, scheduler, sampler, loader position, RNGs, early
stopping state) goes into the checkpoint, so `fit(resume=True)` reproduces the weights of
an uninterrupted run exactly. The hot step never synchronises with the device except
every `log_every` steps, when the running loss is read (averaged over the ranks under --nproc).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from recnas.configs import require_type, write_text_atomic
from recnas.data.loader import BatchLoader
from recnas.data.store import huge_dense_note
from recnas.environment import environment, tf32_matmuls
from recnas.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from recnas.staging import check_writable, refuse_file_at
from recnas.train.checkpoint import OtherLayoutCheckpoint, load_checkpoint, load_model_state, rng_state, save_checkpoint, seed_everything, set_rng_state
from recnas.train import distributed
from recnas.train.config import TrainConfig
from recnas.train.device import no_compiler_reason, resolve_amp, resolve_device
from recnas.train.plan import check_batch_norm, check_global_batch, drops_last, lr_factor
from recnas.train.resume import check_resumable, data_identity
from recnas.train.model_factory import KINDS, check_supernet_paths
from recnas.train.metrics import eval_batch_size, evaluate, format_metric, json_safe, same_device

log = logging.getLogger("recnas.train")

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"


@dataclass
class FitResult:
    """What `Trainer.fit` returns (and metrics.json holds): steps and epochs trained, the best
    and the last validation metrics, training time and throughput (steps only), one history
    entry per evaluation, whether it stopped early or was interrupted (`stop_after`), and the
    environment it ran in."""

    steps: int
    epochs: float
    best_val: dict | None
    final_val: dict | None
    train_seconds: float
    samples_per_s: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    interrupted: bool = False
    # where it trained: on the CPU another thread count gives another model (recnas.environment)
    environment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The result as plain containers (metrics.json's content, before NaN becomes null)."""
        return asdict(self)


def embedding_param_ids(model: nn.Module) -> set[int]:
    """Parameters of embedding tables: by module type, or a name containing "embedding" (the
    trainer gives them their own lr and weight decay; `table_finetune` trains them alone)."""
    from recnas.ops.embedding import FieldEmbedding

    ids = {id(p) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag, FieldEmbedding)) for p in m.parameters(recurse=False)}
    ids |= {id(p) for n, p in model.named_parameters() if "embedding" in n.lower()}
    return ids


def nonfinite_weights(model: nn.Module) -> list[str]:
    """Names of `model`'s floating-point parameters and buffers holding NaN or inf (one sync
    with the device): what a diverged run leaves when its last update overflowed after the
    loss was last read. Read from each tensor's min and max (NaN propagates to both), not
    `isfinite(t)`, which would allocate a mask as large as the embedding tables."""
    named = [(n, t.detach()) for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_floating_point() and t.numel()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(torch.stack(torch.aminmax(t))).all() for _, t in named]).tolist()
    return [n for (n, _), ok in zip(named, finite) if not ok]


def diverged_weights_note(model: nn.Module) -> str | None:
    """Which weights of `model` are not numbers, as an error says it; None when all are."""
    bad = nonfinite_weights(model)
    if not bad:
        return None
    return f"the weights hold NaN or inf ({bad[0]}" + (f" and {len(bad) - 1} more tensors)" if len(bad) > 1 else ")")


class Trainer:
    """Trains `model` on `store` under `cfg`; writes checkpoints and results to `out_dir` if given.

    `train_loader` / `val_loader` may be passed to reuse loaders (e.g. device-resident data
    across many short fine-tunes); otherwise they are built from `store`.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        store=None,
        out_dir: str | Path | None = None,
        sampler=None,
        model_spec: dict | None = None,
        progress: bool = True,
        *,
        train_loader: BatchLoader | None = None,
        val_loader: BatchLoader | None = None,
        eval_archs: list | None = None,
        run_context=None,
    ):
        """`run_context(model)`, if given, is a context manager every training forward/backward
        and every evaluation runs inside, e.g. `partial(recnas.hardware.quant.quantized,
        config=pim)`: quantisation-aware training, since the optimizer step (outside it)
        updates the full-precision weights with the gradients taken at the quantised ones.

        A `Supernet` needs a `sampler` (it trains one path per step); other recnas models take
        neither a sampler nor `eval_archs`. The model is moved to the config's device; the
        Trainer keeps a copy of `cfg` (`self.cfg`), so a later change to the caller's object
        does not reach it."""
        from recnas.supernet.net import check_path_use

        require_type(cfg, TrainConfig, "Trainer's cfg", "TrainConfig.from_dict(d) makes one from a dict, TrainConfig.from_yaml(path) from a file")
        if store is not None and (isinstance(store, (str, os.PathLike)) or not hasattr(store, "meta")):
            raise TypeError(f"Trainer's store must be a CTRStore, got {type(store).__name__}; recnas.data.CTRStore(path) opens a prepared store")
        check_path_use(model, sampler is not None, "Trainer", "sampler", "a path sampler, e.g. recnas.space.samplers.ArchSampler(space), or FixedSampler(arch) to fine-tune one subnet")
        if eval_archs is not None:
            check_path_use(model, True, "Trainer", "eval_archs")
        # its own copy: a TrainConfig is mutable, and a change the caller made to theirs later (for
        # another run) reached this one halfway, e.g. a new lr in its checkpoint's config while
        # its optimizer kept training at the old one
        self.cfg = cfg = cfg.model_copy(deep=True)
        self.run_context = run_context
        requested = resolve_device(cfg.device)
        self.dist = distributed.current(requested)  # torchrun: one process per GPU (or CPU rank, gloo)
        self.device = distributed.device_for(self.dist, requested)
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.model = model.to(self.device)
        self.sampler = sampler
        # a compiled supernet trains on masked, fixed-shape paths (recnas.supernet.masks): a
        # sliced path changes shapes every step and would recompile every step
        self.masked_paths = cfg.compile and sampler is not None and hasattr(model, "path_masks")
        self.step_model = distributed.wrap(self.model, self.dist, self.device)  # DDP when distributed
        if cfg.compile and (sampler is None or self.masked_paths):
            mode = "reduce-overhead" if self.device.type == "cuda" else None  # CUDA graphs: one launch per step
            self.step_model = torch.compile(self.step_model, mode=mode, dynamic=False)
        teacher = self._teacher_architecture(model, sampler, cfg)
        self.teacher_path = model.path_masks(teacher, self.device) if teacher is not None and self.masked_paths else teacher
        # a masked step drops the gradients of what neither path touched (e.g. heads of non-leaf blocks)
        self._teacher_off = {id(p) for p in model.off_path_parameters(teacher)} if teacher is not None and self.masked_paths else set()
        self.model_spec = model_spec
        self.data = data_identity(store.meta) if store is not None else None  # recorded in its files
        self.store = store  # checked on resume, and read for the divergence hint on its dense values
        self.eval_archs = eval_archs if eval_archs is not None else self._default_eval_archs(sampler)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._replaced: list[Path] = []  # a finished run's files that this fresh run's first checkpoint removes (fit)
        self.progress = progress
        if (train_loader is None or (val_loader is None and cfg.eval_every != 0)) and store is None:
            raise ValueError("Trainer needs a store unless train_loader (and val_loader, when evaluating) are given")
        if train_loader is None:
            train_loader = self._loader(store.split("train"), cfg.batch_size, True, cfg.max_train_rows)
        for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
            if loader is not None and not same_device(loader.device, self.device):
                raise ConfigError(f"{name} yields batches on {loader.device}, the model trains on {self.device} (device: {cfg.device}); build it with device={str(self.device)!r}")
        self.train_loader = train_loader
        self.val_loader = val_loader
        if val_loader is None and cfg.eval_every != 0:
            self.val_loader = self._loader(store.split("val"), cfg.eval_batch_size or eval_batch_size(self.device, cfg.batch_size), False, cfg.max_eval_rows)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            if store is not None:
                store.check_trainable()
            check_global_batch(self.train_loader.n, self.train_loader.batch_size, self.dist.world_size)
            raise DataError("the train split has no rows")
        check_batch_norm(model, min(self.train_loader.batch_size, self.train_loader.n))
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        if cfg.warmup_steps > self.total_steps:  # the training commands refuse it; a job's preset on small data says it here
            log.warning("warmup_steps (%d) outlasts this run's %d steps: the lr never reaches %g (it ends at %.3g%% of it)",
                        cfg.warmup_steps, self.total_steps, cfg.lr, 100 * self.total_steps / cfg.warmup_steps)
        self.eval_every = self.steps_per_epoch if cfg.eval_every is None else cfg.eval_every
        self.checkpoint_every = cfg.checkpoint_every or self.steps_per_epoch
        self.optimizer = self._optimizer()
        total, warmup, schedule = self.total_steps, cfg.warmup_steps, cfg.lr_schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, warmup, total, schedule))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        # run state (all of it is checkpointed)
        self.step = 0
        self.best_val: dict | None = None
        self.bad_evals = 0
        self.history: list[dict] = []
        self.best_state: dict | None = None
        self.train_seconds = 0.0
        self.rows_seen = 0
        self.last_val: dict | None = None
        self.stopped_early = False  # a resumed early-stopped run stays stopped
        # the loss summed over the steps since the last log, and their count: the next logged
        # train_loss averages them, so a resumed run must pick them up (mean over the ranks)
        self.running_loss: tuple[float, int] = (0.0, 0)
        # the last logged train_loss: an evaluation between two logs records it, so a resumed
        # run must have it too (it recorded None until its first log)
        self.train_loss: float | None = None

    # -- construction ---------------------------------------------------------------------
    def _loader(self, arrays, batch_size: int, train: bool, max_rows: int | None) -> BatchLoader:
        n = len(arrays) if max_rows is None else min(len(arrays), max_rows)
        shard = dict(rank=self.dist.rank, world_size=self.dist.world_size) if train else {}  # evaluation: every rank sees all
        return BatchLoader(
            arrays, batch_size, shuffle=train, seed=self.cfg.seed, device=self.device, resident=self.cfg.resident_data,
            drop_last=train and drops_last(n, batch_size), max_rows=max_rows, **shard,
        )

    @staticmethod
    def _default_eval_archs(sampler, n: int = 3) -> list | None:
        """Supernet validation scores a few fixed subnets (drawn from a copy of the sampler, so
        the training sampler's stream is untouched and a resumed run draws the same ones)."""
        if sampler is None:
            return None
        if getattr(sampler, "arch", None) is not None:  # a fixed sampler (recnas.space.samplers.FixedSampler)
            return [sampler.arch]
        probe = copy.deepcopy(sampler)
        return [probe.sample() for _ in range(n)]

    @staticmethod
    def _teacher_architecture(model: nn.Module, sampler, cfg: TrainConfig):
        """The largest path when in-place distillation is on (else None)."""
        if cfg.inplace_distill == 0:
            return None
        if sampler is None or not hasattr(model, "largest_architecture"):
            raise ConfigError("inplace_distill: only a supernet trained with an architecture sampler has a largest path to distil from; set it to 0 for other models")
        return model.largest_architecture()

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        groups = [{"params": [p for _, p in params], "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
        # the tables get a group of their own whenever either is set (as before for embedding_lr:
        # the optimizer state a resume loads has the groups it was saved with); an embedding_lr
        # alone means no weight decay on them, its meaning before embedding_weight_decay existed
        if cfg.embedding_lr is not None or cfg.embedding_weight_decay is not None:
            emb = embedding_param_ids(self.model)
            emb_lr = cfg.lr if cfg.embedding_lr is None else cfg.embedding_lr
            groups = [
                {"params": [p for _, p in params if id(p) not in emb], "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                {"params": [p for _, p in params if id(p) in emb], "lr": emb_lr, "weight_decay": cfg.table_decay},
            ]
            groups = [g for g in groups if g["params"]]
        if cfg.optimizer == "adagrad":
            return torch.optim.Adagrad(groups, lr=cfg.lr)
        return torch.optim.Adam(groups, lr=cfg.lr, fused=self.device.type == "cuda" or None)

    # -- one step -------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _train_step(self, batch) -> torch.Tensor:
        if self.cfg.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        arch = None
        with self._run_context():
            with self._autocast():
                if self.sampler is None:
                    logits = self.step_model(batch.dense, batch.sparse)
                else:
                    arch = self.sampler.sample()
                    path = self.model.path_masks(arch, self.device) if self.masked_paths else arch
                    logits = self.step_model(batch.dense, batch.sparse, path)
                logits = logits.float().reshape(-1)
                loss = objective = F.binary_cross_entropy_with_logits(logits, batch.label)
                if self.teacher_path is not None:  # in-place distillation (BigNAS): the largest path teaches
                    teacher = self.step_model(batch.dense, batch.sparse, self.teacher_path).float().reshape(-1)
                    soft = torch.lerp(batch.label, torch.sigmoid(teacher.detach()), self.cfg.inplace_distill)
                    objective = F.binary_cross_entropy_with_logits(teacher, batch.label) + F.binary_cross_entropy_with_logits(logits, soft)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(objective).backward()
        if self.masked_paths:  # the optimizer then skips what the path(s) never touched, as after a sliced step
            for p in self.model.off_path_parameters(arch):
                if self.teacher_path is None or id(p) in self._teacher_off:  # the teacher's gradient is kept
                    p.grad = None
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def _run_context(self):
        return contextlib.nullcontext() if self.run_context is None else self.run_context(self.model)

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, split_loader: BatchLoader | None = None, arch=None) -> dict:
        """Validation metrics of the current weights. A supernet is scored on `arch`, else on
        the mean over `eval_archs`."""
        loader = split_loader if split_loader is not None else self.val_loader  # `or`: an empty loader is false
        if loader is None:  # eval_every: 0 builds no validation loader
            raise ConfigError("this Trainer has no validation loader (eval_every: 0): pass the loader to evaluate on")
        archs = [arch] if arch is not None else (self.eval_archs or [None])
        with self._tf32(), self._run_context():
            runs = [evaluate(self.model, loader, arch=a, device=self.device, amp_dtype=self.amp_dtype) for a in archs]
        if len(runs) == 1:
            return runs[0]
        return {"logloss": sum(r["logloss"] for r in runs) / len(runs), "auc": sum(r["auc"] for r in runs) / len(runs), "rows": runs[0]["rows"]}

    def _dense_scale_hint(self) -> str:
        """Why a run diverged when no lr would help: dense features of a huge magnitude. Read
        only after a divergence."""
        note = huge_dense_note(self.store) if self.store is not None else None
        return "" if note is None else f"; but {note}"

    def _nan_validation(self) -> str:
        """Why an evaluation's log loss is NaN (NaN logits): the run diverged (weights that are
        not numbers, or so large that the logits overflow), or, with finite weights, validation
        rows of a huge magnitude. Read only after such an evaluation."""
        note = huge_dense_note(self.store, "val") if self.store is not None else None
        if note is not None and all(bool(torch.isfinite(v).all()) for v in self.model.state_dict().values() if v.is_floating_point()):
            return f"validation log loss is NaN at step {self.step}: the model's weights are finite, but its logits on some validation rows are not numbers; {note}"
        return f"training diverged: validation log loss NaN at step {self.step} (the model's logits are not numbers); lower lr or set grad_clip{self._dense_scale_hint()}"

    def _check_weights(self) -> None:
        """The weights a checkpoint, model.pt or the caller get must be numbers. The loss is read
        every `log_every` steps and is that of the weights before each step's update, so a run
        whose last updates overflowed (a checkpoint between two logs, or the run's end without
        an evaluation: eval_every 0, a search's fine-tunes) used to write NaN weights and exit 0,
        a checkpoint that resume then loaded, and a candidate that scored NaN. Read only where
        the weights are saved or handed back (one sync), never per step."""
        note = diverged_weights_note(self.model)
        if note is not None:
            raise TrainingDiverged(f"training diverged: {note} after step {self.step}; lower lr or set grad_clip{self._dense_scale_hint()}")

    def _after_eval(self, metrics: dict) -> bool:
        """Record an evaluation (with the last logged train_loss); returns True when early stopping says stop.

        A NaN log loss (NaN logits) ends the run as a divergence: it used to become the best
        evaluation (the first one always did), which no later one could beat (NaN compares false),
        so early stopping then ended a diverged run between two logs of its train loss, exit 0,
        with NaN weights as its model and "best val logloss n/a"; without early stopping the run
        trained on to its next log on NaN weights."""
        if metrics["rows"] and math.isnan(metrics["logloss"]):
            raise TrainingDiverged(self._nan_validation())
        train_loss = self.train_loss
        self.last_val = metrics
        entry = {"step": self.step, "epoch": round(self.epoch, 4), "train_loss": train_loss, "lr": self.optimizer.param_groups[0]["lr"], "val_logloss": metrics["logloss"], "val_auc": metrics["auc"]}
        self.history.append(entry)
        # AUC is NaN on a validation split of one class: n/a, as the run's summary line says
        log.info("step %d  epoch %.2f  train_loss %s  val_logloss %.5f  val_auc %s", self.step, self.epoch, format_metric(train_loss), metrics["logloss"], format_metric(metrics["auc"]))
        # a NaN best from a checkpoint written before NaN evaluations were refused: any number beats it
        best = None if self.best_val is None else self.best_val["logloss"]
        improved = best is None or (isinstance(best, float) and math.isnan(best)) or metrics["logloss"] < best
        if improved:
            self.best_val = {"logloss": metrics["logloss"], "auc": metrics["auc"], "step": self.step}
            self.bad_evals = 0
            if self.cfg.restore_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            self.bad_evals += 1
        patience = self.cfg.early_stopping_patience
        return patience is not None and self.bad_evals >= patience

    @property
    def epoch(self) -> float:
        """Epochs trained so far, fractional mid-epoch."""
        return self.train_loader.epoch + self.train_loader.position / self.steps_per_epoch

    # -- checkpoints ----------------------------------------------------------------------
    def _payload(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            "loader": self.train_loader.state_dict(),
            "world_size": self.dist.world_size,
            "cpu_threads": torch.get_num_threads(),  # on the CPU they decide the rounding (checked on resume)
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # so do the CPU's kernels (AVX512, AVX2, ...)
            "step": self.step,
            "rng": rng_state(),
            "config": self.cfg.model_dump(),
            "model_spec": self.model_spec or {},
            "data": self.data,
            "best": {"val": self.best_val, "bad_evals": self.bad_evals, "history": self.history, "train_seconds": self.train_seconds, "rows_seen": self.rows_seen, "last_val": self.last_val, "stopped_early": self.stopped_early, "running_loss": list(self.running_loss), "train_loss": self.train_loss},
            "best_model": self.best_state,
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write the complete run state (what `fit(resume=True)` and `load_checkpoint` read) to
        `path`, by default `out_dir`/checkpoint.pt; returns the path (None on the ranks other
        than 0 of a distributed run, which hold the same state)."""
        if not self.dist.is_main:  # ranks hold identical state; rank 0 writes it
            return None
        if path is None:
            if self.out_dir is None:
                raise ValueError("no checkpoint path: the Trainer has no out_dir")
            path = self.out_dir / CHECKPOINT_FILE
            saved = save_checkpoint(path, self._payload())
            for replaced in self._replaced:  # only now: a run stopped before it has a checkpoint leaves the replaced run whole
                replaced.unlink(missing_ok=True)
            self._replaced = []
            return saved
        return save_checkpoint(path, self._payload())

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the complete run state; a checkpoint of another model or run raises CheckpointError."""
        p = load_checkpoint(path, map_location=self.device)
        check_resumable(self, p, path)
        check_supernet_paths(p, path)
        # a spec of recnas's own models (check_resumable found it equal) describes the model whole,
        # as a Python caller's own kind ({"kind": "toy"}) need not
        own_spec = bool(p["model_spec"]) and (self.model_spec or {}).get("kind") in KINDS
        try:
            load_model_state(self.model, p["model"], path, own_spec=own_spec)
        except OtherLayoutCheckpoint as exc:
            raise OtherLayoutCheckpoint(exc.problem, "start the run afresh (--overwrite)") from None
        note = diverged_weights_note(self.model)
        if note is not None:  # a diverged run's, written before the weights were checked: resumed, it trained on to a NaN loss
            raise CheckpointError(f"{path}: {note}: the run that wrote it diverged, and resuming it cannot recover; start afresh (--overwrite) with a lower lr or grad_clip")
        try:
            self.optimizer.load_state_dict(p["optimizer"])
            self.scheduler.load_state_dict(p["scheduler"])
            self._schedule_lr()
            self.scaler.load_state_dict(p["scaler"])
            if self.sampler is not None:
                self.sampler.load_state_dict(p["sampler"])
            self.train_loader.load_state_dict(p["loader"])
            best = p["best"]
            self.step = int(p["step"])
            self.best_val, self.bad_evals, self.history = best["val"], int(best["bad_evals"]), list(best["history"])
            self.train_seconds, self.rows_seen, self.last_val = float(best["train_seconds"]), int(best["rows_seen"]), best["last_val"]
            self.best_state = p.get("best_model")
            if not self.cfg.restore_best:  # kept, they would go stale and a later resume under restore_best: true restore them
                self.best_state = None
            self.stopped_early = bool(best.get("stopped_early", False))
            total, count = best.get("running_loss", (0.0, 0))  # absent from older checkpoints
            self.running_loss = (float(total), int(count))
            last_logged = best.get("train_loss")  # absent from older checkpoints
            self.train_loss = None if last_logged is None else float(last_logged)
            set_rng_state(p["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as exc:  # AttributeError: a hand-edited state of the wrong type
            raise CheckpointError(f"{path}: checkpoint state does not fit this run ({type(exc).__name__}: {exc})") from None

    def _schedule_lr(self) -> None:
        """Set the lr of the next step from this run's schedule. The optimizer state a resume
        loads holds the lr the saved run's schedule gave that step: under another total (a
        resume with more steps) the first resumed step trained at it, e.g. at 0, the end of a
        finished cosine or linear run, before the new schedule took over from the second."""
        sched = self.scheduler
        for group, base, factor in zip(self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * factor(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _tf32(self):
        """fp32 matmuls on tensor cores (TF32) on CUDA, while this trainer trains or evaluates
        (recnas.environment.tf32_matmuls): the caller's setting is back once it returns."""
        return tf32_matmuls(self.device.type == "cuda")

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after: int | None = None) -> FitResult:
        """Train to `total_steps` (or early stop) and return the `FitResult`. `resume=True`
        continues from `out_dir`'s checkpoint.pt; a fresh run seeds the global RNGs (torch,
        numpy, random) from the config's `seed` first. `stop_after=N` checkpoints and returns
        after step N as if interrupted (time-boxed jobs; tests of resume). A Trainer that has
        reached `total_steps` trains no further: calling `fit()` again returns the same result.
        On CUDA the fp32 matmuls run as TF32 until it returns."""
        with self._tf32():
            return self._fit(resume, stop_after)

    def _fit(self, resume: bool, stop_after: int | None) -> FitResult:
        if resume:
            if self.out_dir is None:
                raise ConfigError("resume needs an output directory holding checkpoint.pt")
            path = self.out_dir / CHECKPOINT_FILE
            if not path.is_file():
                raise CheckpointError(f"{path}: nothing to resume (no checkpoint); run without --resume first")
            self.load_checkpoint(path)
        elif self.step >= self.total_steps or self.stopped_early:
            # finished in this process already: nothing to train. Going on re-saved checkpoint.pt
            # with the best weights restore_best had loaded (a later resume trained on from them
            # as if they were the last), and re-seeded the global RNGs
            return self._result(final_val=self.last_val)
        elif self.step > 0:
            pass  # goes on in this process (after `stop_after`, or `load_checkpoint`): its RNGs run on, as uninterrupted
        else:
            seed_everything(self.cfg.seed)
            # a fresh run into a finished run's folder (`--overwrite`): once this run has a
            # checkpoint, the old model.pt and metrics.json would sit beside it as if they were
            # its own (an interrupted run's folder evaluated as the replaced model, without a word).
            # config.yaml stays until the end, as before: it may be this run's own --config.
            if self.out_dir is not None:
                self._replaced = [self.out_dir / MODEL_FILE, self.out_dir / METRICS_FILE]
        if stop_after is not None and self.step >= stop_after and self.step < self.total_steps and not self.stopped_early:
            return self._result(interrupted=True)  # already there (a resumed time box): not one step more
        if self.out_dir is not None:
            refuse_file_at(self.out_dir, "the run writes its folder")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.dist.is_main:  # the one rank that writes there
                check_writable(self.out_dir, (CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE, CONFIG_FILE))
        writer = self._tensorboard()
        self.model.train()
        running, n_running = torch.tensor(self.running_loss[0], device=self.device), self.running_loss[1]
        stop = interrupted = False
        rows_at_log, t_log = self.rows_seen, time.perf_counter()
        t_seg = time.perf_counter()
        # closed however the loop ends: a Ctrl-C or an error lost the events of the last flush_secs
        with self._progress_bar() as bar, (contextlib.closing(writer) if writer is not None else contextlib.nullcontext()):
            task = bar.add_task("train", total=self.total_steps, completed=self.step, loss="-", sps="-")
            while self.step < self.total_steps and not stop and not self.stopped_early:
                for batch in self.train_loader:
                    try:
                        running += self._train_step(batch)
                    except Exception as exc:
                        # compile: true without a compiler failed at the first step with a traceback of ~140 lines
                        reason = no_compiler_reason(exc) if self.cfg.compile else None
                        if reason is None:
                            raise
                        raise ConfigError(
                            f"compile: true needs a C/C++ compiler, which torch.compile builds its kernels with, and none works here ({reason[:300]}); "
                            "install one (e.g. g++; or name it in CXX, CC for Triton), or set compile: false"
                        ) from None
                    n_running += 1
                    self.step += 1
                    self.rows_seen += len(batch)
                    bar.advance(task)
                    last = self.step >= self.total_steps
                    if self.step % self.cfg.log_every == 0 or last:
                        # the only sync in the loop (and, under --nproc, the only collective besides DDP's)
                        train_loss = self.train_loss = float(distributed.mean_over_ranks(running / n_running, self.dist).item())
                        running.zero_()
                        n_running = 0
                        if not math.isfinite(train_loss):
                            raise TrainingDiverged(f"training diverged: loss {train_loss} at step {self.step}; lower lr or set grad_clip{self._dense_scale_hint()}")
                        now = time.perf_counter()
                        sps = (self.rows_seen - rows_at_log) / max(now - t_log, 1e-9)
                        rows_at_log, t_log = self.rows_seen, now
                        bar.update(task, loss=f"{train_loss:.4f}", sps=f"{sps:,.0f}")
                        if writer is not None:
                            writer.add_scalar("train/loss", train_loss, self.step)
                            writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
                            writer.add_scalar("train/samples_per_s", sps, self.step)
                    eval_due = self.val_loader is not None and self.eval_every > 0 and (self.step % self.eval_every == 0 or last)
                    ckpt_due = self.out_dir is not None and self.step % self.checkpoint_every == 0
                    interrupted = stop_after is not None and self.step >= stop_after and not last
                    if eval_due or ckpt_due or interrupted:
                        t_seg = self._pause_clock(t_seg)
                        if eval_due:
                            metrics = self.evaluate()
                            self.stopped_early = self._after_eval(metrics)
                            if writer is not None:
                                writer.add_scalar("val/logloss", metrics["logloss"], self.step)
                                writer.add_scalar("val/auc", metrics["auc"], self.step)
                            self.model.train()
                        # the run's end is written once, after the loop (the same state): it was written twice
                        ending = (last or self.stopped_early) and not interrupted
                        if (ckpt_due or interrupted) and self.out_dir is not None and not ending:
                            self._check_weights()
                            self._keep_running(running, n_running)
                            self.save_checkpoint()
                        t_seg = time.perf_counter()
                    if last or self.stopped_early or interrupted:
                        stop = True
                        break
        self._pause_clock(t_seg)
        if interrupted:
            return self._result(interrupted=True)
        self._check_weights()
        if self.val_loader is not None and self.eval_every > 0 and (not self.history or self.history[-1]["step"] != self.step):
            self._after_eval(self.evaluate())  # e.g. resumed a finished run
        final_val = self.last_val
        if self.out_dir is not None:
            self._keep_running(running, n_running)
            self.save_checkpoint()  # last weights, resumable (e.g. with a larger max_steps)
        if self.cfg.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        result = self._result(final_val=final_val)
        if self.out_dir is not None and self.dist.is_main:
            self._write_outputs(result)
        distributed.barrier(self.dist)
        return result

    def _keep_running(self, running: torch.Tensor, n_running: int) -> None:
        """Record the unlogged running loss for the checkpoint (every rank calls it: a collective).
        Its mean over the ranks is restored on every rank, which keeps the logged mean the same."""
        self.running_loss = (float(distributed.mean_over_ranks(running, self.dist).item()), n_running)

    def _pause_clock(self, t_seg: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.train_seconds += now - t_seg
        return now

    def _result(self, final_val=None, interrupted=False) -> FitResult:
        return FitResult(
            steps=self.step, epochs=round(self.epoch, 4), best_val=self.best_val, final_val=final_val or self.last_val,
            train_seconds=self.train_seconds, samples_per_s=self.rows_seen / self.train_seconds if self.train_seconds > 0 else 0.0,
            history=list(self.history), stopped_early=self.stopped_early, interrupted=interrupted,
            environment=environment(self.device) | {"world_size": self.dist.world_size},
        )

    def _write_outputs(self, result: FitResult) -> None:
        """model.pt (final weights + spec), metrics.json and the resolved config."""
        metrics = result.to_dict()
        save_checkpoint(self.out_dir / MODEL_FILE, {"model": self.model.state_dict(), "model_spec": self.model_spec or {}, "config": self.cfg.model_dump(), "metrics": json_safe(metrics), "step": self.step, "data": self.data})
        write_text_atomic(self.out_dir / METRICS_FILE, json.dumps(json_safe(metrics), indent=2))
        self.cfg.to_yaml(self.out_dir / CONFIG_FILE)

    def _tensorboard(self):
        if not self.cfg.tensorboard or self.out_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch's writer needs the optional tensorboard package
            raise ConfigError(f"tensorboard: true needs the tensorboard package ({exc}); install it or set tensorboard: false") from None
        if not self.dist.is_main:  # rank 0 writes the run's files; every rank's events used to land in tb/
            return None
        # purge: TensorBoard hides the events of earlier files in tb/ at or past the step this run
        # logs next: a resumed run's logged after its checkpoint (purging from the checkpoint's
        # step hid that step's points for good), and a fresh run's (--overwrite) all of a
        # replaced run's, which were shown as one curve with this run's
        return SummaryWriter(log_dir=str(self.out_dir / "tb"), purge_step=self.step + 1)

    def _progress_bar(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        console = Console(stderr=True)
        return Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[sps]} samples/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not (self.progress and self.dist.is_main and sys.stderr.isatty()), transient=False,
        )
