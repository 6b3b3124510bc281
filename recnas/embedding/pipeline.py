"""The whole embedding size search: supernet training -> RL search (per seed) -> consensus
widths -> from-scratch retraining -> report. Used by `recnas embed search` and the benchmark."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recnas.configs import SEED_MAX, require_type
from recnas.data.loader import BatchLoader
from recnas.data.store import STORE, CTRStore, huge_dense_note
from recnas.embedding.budget import params_to_mib, resolve_budget, table_params
from recnas.embedding.config import EmbedSearchConfig
from recnas.embedding.model import EmbeddingSizeNet
from recnas.embedding.samplers import WidthSampler
from recnas.embedding.search import SearchResult, reinforce_search, repair_to_budget
from recnas.embedding.train import train_supernet
from recnas.environment import environment, tf32_matmuls
from recnas.errors import ConfigError, DataError, TrainingDiverged
from recnas.staging import OutputDir, exclusive, naming
from recnas.train.checkpoint import seed_everything, torch_save
from recnas.train.metrics import evaluate, json_safe
from recnas.train.device import check_runs_here, resolve_device
from recnas.train.plan import planned_steps, refuse_warmup_past
from recnas.train.trainer import Trainer

RESULT, EMB_DIMS, MODEL = "result.json", "emb_dims.json", "model.pt"
OUTPUT = OutputDir("recnas embed search result", RESULT, ConfigError, names=(RESULT, EMB_DIMS, MODEL))  # what --out may be


def progress_bar(enabled: bool):
    """A rich progress display on stderr (a no-op context when disabled)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled)


def validation_sample(store: CTRStore, rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed random subsample of the val split (the same for every seed of one search)."""
    val = store.split("val")
    idx = np.sort(np.random.default_rng(seed).permutation(len(val))[:rows])
    part = val.take(idx)
    return torch.from_numpy(np.asarray(part.dense, np.float32)), torch.from_numpy(np.asarray(part.sparse).astype(np.int64)), torch.from_numpy(np.asarray(part.label, np.float32))


def search_one_seed(store: CTRStore, cfg: EmbedSearchConfig, budget: int, seed: int, val, bar=None) -> dict:
    """Train an embedding supernet with `seed`, then search widths on it."""
    meta, choices = store.meta, tuple(cfg.widths)
    device = resolve_device(cfg.device)
    seed_everything(seed)
    net = EmbeddingSizeNet(meta, max_width=max(choices), proj_dim=cfg.model.proj_dim, hidden=cfg.model.hidden).to(device)
    s = cfg.supernet
    train = store.split("train")
    full = min(len(train), s.max_train_rows or len(train)) >= s.batch_size  # drop a ragged last batch unless it is all there is
    loader = BatchLoader(train, s.batch_size, shuffle=True, seed=seed, max_rows=s.max_train_rows, drop_last=full, device=device, resident=device.type == "cuda")
    steps = s.steps or max(1, round(s.epochs * len(loader)))
    sampler = WidthSampler(meta.n_sparse, len(choices), adaptive=s.sampler == "adaptive", seed=seed, floor=s.floor)
    t0 = time.perf_counter()
    task = bar.add_task(f"supernet seed {seed}", total=steps, info="") if bar else None
    losses = train_supernet(net, loader, sampler, choices, steps, s.lr, (lambda i, l: bar.update(task, completed=i, info=f"loss {l:.4f}")) if bar else None)
    t1 = time.perf_counter()
    net.eval()
    dense, sparse, label = (t.to(device) for t in val)

    @torch.no_grad()
    def score(widths: list[int]) -> float:
        loss = float(F.binary_cross_entropy_with_logits(net(dense, sparse, widths), label))
        if not math.isfinite(loss):  # NaN or inf: it made the rewards NaN, and torch.multinomial then failed with a traceback
            note = huge_dense_note(store, "val")
            raise TrainingDiverged(
                f"embedding search: the supernet's validation log loss is {loss} (seed {seed}): its weights are finite, but its logits on the "
                "validation sample are not (they overflow); " + (note if note is not None else "lower supernet.lr")
            )
        return loss

    task = bar.add_task(f"search seed {seed}", total=cfg.search.iterations, info="") if bar else None
    result: SearchResult = reinforce_search(
        score, meta.vocab_sizes, choices, budget, cfg.search, seed=seed,
        progress=(lambda i, e: bar.update(task, completed=i, info=f"reward {e['reward']:.4f}  params {e['params']:,.0f}")) if bar else None,
    )
    return {
        "seed": seed, "supernet_steps": steps, "widths": result.widths, "params": result.params, "probs": result.probs,
        "supernet_val_logloss": score(result.widths), "supernet_last_loss": float(np.mean(losses[-20:])),
        "sampler_final_probs": sampler.probs().round(4).tolist(), "history": result.history,
        "seconds": {"supernet": t1 - t0, "search": time.perf_counter() - t1},
    }


def stability(widths_per_seed: Sequence[Sequence[int]], names: Sequence[str]) -> dict:
    """Per field: the modal width (ties -> smaller) and the share of seeds that chose it."""
    per_field = []
    for f, name in enumerate(names):
        counts = Counter(int(w[f]) for w in widths_per_seed)
        mode = min(counts, key=lambda w: (-counts[w], w))
        per_field.append({"field": name, "modal_width": mode, "agreement": counts[mode] / len(widths_per_seed), "widths": [int(w[f]) for w in widths_per_seed]})
    return {
        "seeds": len(widths_per_seed), "overall_agreement": float(np.mean([p["agreement"] for p in per_field])),
        "all_seeds_identical": len({tuple(w) for w in widths_per_seed}) == 1, "per_field": per_field,
    }


def consensus(runs: list[dict], store: CTRStore, choices: Sequence[int], budget: int, names: Sequence[str]) -> list[int]:
    """Per-field modal width over seeds, repaired to the budget with the mean policy."""
    modal = [p["modal_width"] for p in stability([r["widths"] for r in runs], names)["per_field"]]
    log_p = np.log(np.clip(np.mean([np.asarray(r["probs"]) for r in runs], 0), 1e-12, None))
    return repair_to_budget(modal, list(choices), log_p, store.meta.vocab_sizes, budget)


def retrain(store: CTRStore, widths: Sequence[int], cfg: EmbedSearchConfig, progress: bool = False) -> tuple[EmbeddingSizeNet, dict]:
    """Train the compact model of `widths` from scratch with the shared Trainer; val/test metrics."""
    seed_everything(cfg.retrain.seed)
    model = EmbeddingSizeNet(store.meta, widths=widths, proj_dim=cfg.model.proj_dim, hidden=cfg.model.hidden)
    trainer = Trainer(model, cfg.retrain, store, progress=progress)
    try:
        fit = trainer.fit()
    except TrainingDiverged as exc:  # after the search: say which training, and which section's lr
        raise TrainingDiverged(f"retrain (the searched widths trained from scratch): {exc} (in the retrain section of the config)") from None
    # on the whole splits, as the report says: `max_eval_rows` caps the validation passes of the
    # training alone (it used to cap the reported test split too: `max_eval_rows: 1` gave a test
    # log loss of one row); scored as the trainer evaluates (TF32 on CUDA)
    with tf32_matmuls(trainer.device.type == "cuda"):
        metrics = {split: evaluate(model, store.split(split), device=trainer.device) for split in ("val", "test")}
    metrics["steps"], metrics["train_seconds"] = fit.steps, fit.train_seconds
    return model, metrics


def run_search(store: CTRStore, cfg: EmbedSearchConfig, budget: int, seeds: int = 1, out: str | Path | None = None, progress: bool = False, do_retrain: bool = True, overwrite: bool = False) -> dict:
    """Search under `budget` table parameters with seeds cfg.seed .. cfg.seed+seeds-1; with
    `out`, write the results there whole (`write_outputs`).

    `store` is a CTRStore, `cfg` an EmbedSearchConfig (`EmbedSearchConfig.from_dict` or
    `from_yaml` makes one) and `budget` the table parameters (`resolve_budget` converts MiB):
    a budget that even the smallest width for every field exceeds is refused before anything
    is trained. Returns the report (result.json's contents)."""
    require_type(store, CTRStore, "run_search's store", "recnas.data.CTRStore(path) opens a prepared store")
    require_type(cfg, EmbedSearchConfig, "run_search's cfg", "EmbedSearchConfig.from_dict(d) makes one from a dict, from_yaml(path) from a file")
    budget = resolve_budget(store.meta.vocab_sizes, cfg.widths, budget_params=budget)  # it used to fail only after the whole search
    if not store.meta.cat_names:  # a dense-only store (csv spec without `categorical:`)
        raise DataError(f"{store.dir} has no categorical fields: there are no embedding widths to search")
    store.check_trainable()  # a --split none store: the supernet's epoch-after-epoch loop found no batch and never ended
    if cfg.seed + seeds - 1 > SEED_MAX:  # the last seeds ran past what a seed may be (the RNGs happened to take them)
        raise ConfigError(f"--seeds {seeds} from seed {cfg.seed} runs up to seed {cfg.seed + seeds - 1}, past the largest seed {SEED_MAX}: start from a lower --seed")
    if out is not None:
        OUTPUT.check(out, overwrite)  # refuse before the long run, not after it
        STORE.check_outside(out, "--out", ConfigError)
    if do_retrain:  # a retrain device or amp this machine lacks: refused now, not after the search
        check_runs_here(cfg.retrain, "retrain")
        if cfg.retrain.inplace_distill:  # the Trainer refuses it for a plain model, but only after the search
            raise ConfigError("retrain: inplace_distill: only a supernet trained with an architecture sampler has a largest path to distil from; the retrained model is a plain one, set it to 0")
        steps = planned_steps(cfg.retrain, len(store.split("train")))
        # as the training commands refuse it; the Trainer only warned, after the search
        length = "max_steps" if cfg.retrain.max_steps else f"{cfg.retrain.epochs} epochs of {store.dir}"
        refuse_warmup_past(cfg.retrain.warmup_steps, steps, f"retrain: the {cfg.retrain.warmup_steps} warmup_steps", "the retraining", length, "retrain.warmup_steps")
    # --out locked for the whole run, not only while the result is written: a second search on
    # it ran to the end, then lost its work ("already exists") or, with --overwrite, replaced the first's
    with exclusive(out, error=ConfigError) if out is not None else contextlib.nullcontext():
        return _search(store, cfg, budget, seeds, out, progress, do_retrain, overwrite)


def _search(store: CTRStore, cfg: EmbedSearchConfig, budget: int, seeds: int, out, progress: bool, do_retrain: bool, overwrite: bool) -> dict:
    """`run_search` once its inputs are checked and its --out is held."""
    meta, choices = store.meta, tuple(cfg.widths)
    val = validation_sample(store, cfg.search.val_rows, cfg.seed)
    with progress_bar(progress) if progress else contextlib.nullcontext() as bar:
        runs = [search_one_seed(store, cfg, budget, cfg.seed + k, val, bar) for k in range(seeds)]
    widths = consensus(runs, store, choices, budget, meta.cat_names)
    params = table_params(meta.vocab_sizes, widths)
    report = {
        "dataset": str(store.dir), "fields": meta.cat_names, "vocab_sizes": meta.vocab_sizes, "candidate_widths": list(choices),
        "emb_dims": widths, "params": params, "mib": params_to_mib(params),
        "budget_params": budget, "budget_mib": params_to_mib(budget), "budget_used": params / budget,
        "stability": stability([r["widths"] for r in runs], meta.cat_names), "runs": runs, "config": cfg.model_dump(mode="json"),
        "environment": environment(resolve_device(cfg.device)),  # the thread count decides CPU rounding, and so the widths
    }
    model = None
    if do_retrain:
        model, metrics = retrain(store, widths, cfg, progress)
        report["retrain"] = metrics
    if out is not None:
        write_outputs(out, report, model, overwrite)
    return report


def write_outputs(out: str | Path, report: dict, model: EmbeddingSizeNet | None, overwrite: bool) -> None:
    """result.json, emb_dims.json and (after a retrain) model.pt, staged beside `out` and swapped
    in together: a failed or interrupted write leaves the previous result whole, and a new
    result never sits beside an old run's model.pt."""
    with OUTPUT.staged(out, overwrite) as tmp:  # a failed write names its file (`naming`): a full disk, a file size limit
        with naming(tmp / EMB_DIMS):
            (tmp / EMB_DIMS).write_text(json.dumps(report["emb_dims"]))
        if model is not None:
            # through a Python file: torch's own writer, given a path, fails on a full disk with
            # "RuntimeError: basic_ios::clear: iostream error", a traceback naming nothing
            with naming(tmp / MODEL), open(tmp / MODEL, "wb") as fh:
                torch_save({"state_dict": model.state_dict(), "widths": report["emb_dims"], "config": report["config"]}, fh)
        with naming(tmp / RESULT):
            (tmp / RESULT).write_text(json.dumps(json_safe(report), indent=2))  # the marker of a complete result: last
