"""The rank-correlation study behind `recnas study rank`.

Training every subnet from scratch is the study's whole cost, while the supernet side is a
few seconds per subnet; so from-scratch results are kept in a cache file keyed by a
fingerprint of (data, space, scratch config, evaluation rows, seed) and the architecture
hash. An interrupted study resumes where it stopped, and studies of several supernets of the
same space and data (e.g. two training recipes) share one set of from-scratch runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import Progress

from recnas import configs
from recnas.data.store import CTRStore, check_outside_results, check_run_folder
from recnas.environment import environment, tf32_matmuls
from recnas.errors import ConfigError
from recnas.search.evaluator import CandidateEvaluator, Genotype
from recnas.search.rank import rank_correlation, scatter_plot
from recnas.space.samplers import DRAWS_PER_SUBNET, distinct_random_architectures
from recnas.staging import check_parent, check_writable, exclusive, remove_stale_writes
from recnas.train.config import TrainConfig
from recnas.train.metrics import json_safe

log = logging.getLogger("recnas.search")


class RankStudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    finetune: TrainConfig = Field(default_factory=lambda: TrainConfig(batch_size=512, max_steps=20, lr=5e-4, eval_every=0, restore_best=False))
    scratch: TrainConfig = Field(default_factory=lambda: TrainConfig(batch_size=512, epochs=1, lr=2e-3))
    eval_rows: int | None = Field(20_000, ge=1)
    seed: configs.Seed = 0

    @classmethod
    def load(cls, path: str | Path | None) -> "RankStudyConfig":
        return cls() if path is None else configs.load(cls, path)


def is_log_loss(value) -> bool:
    """What the cache holds, checked on write and on read alike: a finite number. A diverged
    run's NaN would be ranked as a score, and written as JSON `NaN` it made the next study
    refuse the whole cache."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


class ScratchCache:
    """{fingerprint: {arch hash: from-scratch validation log loss}} in one JSON file; entries of
    other fingerprints are kept untouched, and each result is written as soon as it exists."""

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        self.all: dict[str, dict[str, float]] = {}
        if self.path.exists():
            try:
                data = json.loads(configs.read_text(self.path, "scratch cache"))
                if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                    raise ValueError("not a mapping of fingerprints to results")
                for fp, entries in data.items():  # a bad entry would be used as a score, or crash the ranking
                    for key, value in entries.items():
                        if not is_log_loss(value):
                            raise ValueError(f"entry {fp}/{key} is {value!r}, not a finite log loss")
            except ValueError as exc:
                raise ConfigError(f"{self.path}: unreadable scratch cache ({exc}); move it away to start a new one") from None
            self.all = data
        self.entries = self.all.setdefault(fingerprint, {})

    def get(self, key: str) -> float | None:
        return self.entries.get(key)

    def put(self, key: str, value: float) -> None:
        """Add one result. The file is re-read and merged under a lock first: two studies sharing
        one cache (`--scratch-cache`) at once would otherwise each write back only what they had
        read, and erase the other's results."""
        if not is_log_loss(value):  # the caller leaves a diverged run out; never write what `__init__` refuses
            raise ValueError(f"scratch cache: {key} has log loss {value!r}, not a finite number")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self.path, "scratch cache", wait=True):
            merged = ScratchCache(self.path, self.fingerprint)
            for fp, entries in self.all.items():
                merged.all.setdefault(fp, {}).update(entries)
            merged.entries[key] = float(value)
            self.all, self.entries = merged.all, merged.entries
            configs.write_text_atomic(self.path, json.dumps(self.all, indent=1, sort_keys=True))


def scratch_fingerprint(meta, space, cfg: RankStudyConfig) -> str:
    """What a from-scratch score depends on besides the architecture."""
    # "init": scratch runs are built and trained as the search's `scoring: scratch` builds them
    # (seeded by the scratch config's own seed); entries of the earlier init are not reused
    what = {"data": meta.model_dump(mode="json"), "space": space.model_dump(mode="json"), "scratch": cfg.scratch.model_dump(mode="json"), "eval_rows": cfg.eval_rows, "seed": cfg.seed, "init": 2}
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def base_rate_logloss(train_labels: np.ndarray, val_labels: np.ndarray) -> float:
    """Validation log loss of the constant prediction of the training click rate: a subnet
    trained from scratch that ends above it has learnt nothing usable (too short a recipe, too
    high an lr), and its rank in the study says nothing about its architecture. A train split of
    one class predicts it for certain: 0 on a validation split of that class, infinite (null in
    JSON) on one with the other (a clip to 1e-7 used to write 1e-7 and 16 x the positive rate,
    numbers of the clip, not the data)."""
    p = float(np.mean(np.asarray(train_labels, dtype=np.float64)))
    y = np.asarray(val_labels, dtype=np.float64)
    if p in (0.0, 1.0):  # 0 * log(0) is 0 here: a class that never occurs costs nothing
        other = float(y.sum()) if p == 0.0 else float((1 - y).sum())
        return math.inf if other > 0 else 0.0
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def store_base_rate(store, split: str, rows: int | None = None) -> float:
    """`base_rate_logloss` of `store`'s `split` (its first `rows`; all with None) against the
    click rate of its train split: what the rank study, the search job and the training
    commands compare a model with."""
    return base_rate_logloss(store.split("train").label, store.split(split).label[:rows])


def above_base_rate(logloss, base: float) -> bool:
    """Whether a model's `logloss` says it learnt nothing usable: a finite number above the
    `base` rate's (`store_base_rate`). A one-class split (base 0 or infinite) judges nothing:
    any loss is above a base of 0, none above an infinite one, and the data notes name such
    a split. One rule for the rank study, the search job and the training commands (the job's
    test rows named every model of a one-class split)."""
    return isinstance(logloss, float) and math.isfinite(logloss) and 0 < base < math.inf and logloss > base


STUDY_FILES = ("rank_study.json", "rank_study.png")  # a finished study's results in its --out
# the results, written after the plot: a plot without them is a study killed before they were
# written, which a re-run finishes (the json was written first, and a kill while drawing the plot,
# about a second of matplotlib, left a study the re-run refused as finished, never drawn); a json
# whose plot was removed by hand is still a finished study, not replaced without --overwrite
STUDY_DONE = "rank_study.json"


def run_rank_study(supernet_path, data, n: int, out, cfg: RankStudyConfig, progress: bool = True, scratch_cache: str | Path | None = None, overwrite: bool = False) -> dict:
    """`scratch_cache`: the cache file (default out/scratch_cache.json). `out` is locked while
    the study runs; a cache shared by several studies is merged on every write. An `out` that
    is a file is refused first: it used to fail only at the first cached result, "File exists";
    so is a `scratch_cache` below a file, or in a data store or embedding search result (whose
    --overwrite it would block).

    An `out` of an interrupted study (its scratch_cache.json, no results yet; or its plot without
    rank_study.json, the last file it writes) is continued: its from-scratch results are
    reused. One of a finished study (its rank_study.json) is
    refused unless `overwrite`: a second study there (of another supernet, seed or config)
    replaced its results without a word. With `overwrite` the new study replaces them; the
    cache is kept, and reused where its fingerprint matches, as any study reuses it."""
    check_run_folder(out)
    if scratch_cache is not None:
        check_parent(scratch_cache, "--scratch-cache")
        check_outside_results(scratch_cache, "--scratch-cache")
    with exclusive(out), tf32_matmuls(torch.cuda.is_available()):  # on CUDA as the trainers run, for the whole study
        finished = [name for name in STUDY_FILES if os.path.lexists(Path(out) / name)]
        if STUDY_DONE in finished and not overwrite:
            raise ConfigError(f"{out} already holds a finished rank study ({' and '.join(finished)}); pass --overwrite to replace it, or choose another --out")
        # the temp files a hard kill mid-write (cache, json, plot) left there: nothing else removes them
        remove_stale_writes(out)
        return _rank_study(supernet_path, data, n, Path(out), cfg, progress, scratch_cache)


def _rank_study(supernet_path, data, n: int, out: Path, cfg: RankStudyConfig, progress: bool, scratch_cache: str | Path | None) -> dict:
    from recnas.space import SearchSpace
    from recnas.train.device import resolve_device
    from recnas.train.model_factory import check_data, load_trained

    store = CTRStore(data)
    supernet, spec, _ = load_trained(supernet_path)
    if spec.get("kind") != "supernet":
        raise ConfigError(f"{supernet_path}: holds a {spec.get('kind')} model, not a supernet")
    check_data(spec, store.meta, str(data))
    space = SearchSpace(**spec["space"])
    archs = distinct_random_architectures(cfg.seed, space, n)
    if len(archs) < 2:  # a space of one architecture: it used to train it from scratch, then blame divergence ("0 of 1 subnets diverged")
        raise ConfigError(f"the space of {supernet_path} holds one architecture ({n * DRAWS_PER_SUBNET} random draws found no other); a rank correlation needs at least 2 distinct ones: study a supernet of a larger space")
    if len(archs) < n:  # drawn until distinct: fewer means the space holds no more
        log.warning("the space of %s holds %d distinct architectures (%d random draws found no more): studying those, not --n %d", supernet_path, len(archs), n * DRAWS_PER_SUBNET, n)
    if out.is_dir():  # a read-only folder, or a folder where a file goes, failed after the subnets had trained
        check_writable(out, (*STUDY_FILES, *(() if scratch_cache is not None else ("scratch_cache.json",))), what="rank study")
    device = resolve_device(cfg.finetune.device)  # where fine-tunes run: score there too
    supernet = supernet.to(device).eval()
    plain = CandidateEvaluator(space, store, None, cfg.eval_rows, device, supernet=supernet)
    tuned = CandidateEvaluator(space, store, cfg.finetune, cfg.eval_rows, device, supernet=supernet)
    # the search's own from-scratch scorer (`scoring: scratch`), so the study measures the ranker the search uses
    from_scratch = CandidateEvaluator(space, store, cfg.scratch, cfg.eval_rows, resolve_device(cfg.scratch.device))
    cache = ScratchCache(Path(scratch_cache) if scratch_cache is not None else out / "scratch_cache.json", scratch_fingerprint(store.meta, space, cfg))
    rows, reused, diverged = [], 0, []
    console = Console()
    with Progress(console=console, disable=not (progress and console.is_interactive), transient=True) as bar:  # piped: no blank line left
        task = bar.add_task("subnets", total=len(archs))
        for arch in archs:
            g = Genotype(arch)
            scratch = cache.get(arch.hash)
            if scratch is None:
                scratch = from_scratch(g)["logloss"]  # inf when training diverged
                if not is_log_loss(scratch):  # not cached: a later study with a fixed config retrains it
                    log.warning("subnet %s diverged in from-scratch training (val log loss %s): left out of the correlation", arch.hash, scratch)
                    diverged.append(arch.hash)
                    bar.advance(task)
                    continue
                cache.put(arch.hash, scratch)
            else:
                reused += 1
            rows.append({"arch": arch.hash, "inherited": plain(g)["logloss"], "finetuned": tuned(g)["logloss"], "scratch": scratch})
            bar.advance(task)
    if len(rows) < 2:
        raise ConfigError(f"{len(diverged)} of {len(archs)} subnets diverged in from-scratch training, leaving {len(rows)} to correlate (at least 2 needed); lower the scratch lr or check the data")
    base = store_base_rate(store, "val", cfg.eval_rows)
    scratch = [r["scratch"] for r in rows]
    corr = {name: rank_correlation([r[name] for r in rows], scratch) for name in ("inherited", "finetuned")}
    out.mkdir(parents=True, exist_ok=True)
    best = min(rows, key=lambda r: r["scratch"])
    result = {"n": len(rows), "distinct_subnets": len(archs), "correlation": corr, "scratch_reused": reused, "diverged": diverged, "best_scratch": {"arch": best["arch"], "logloss": best["scratch"]},
              "base_rate_logloss": base, "worse_than_base_rate": [r["arch"] for r in rows if above_base_rate(r["scratch"], base)], "rows": rows, "config": json.loads(cfg.model_dump_json()),
              "environment": environment(device)}  # the thread count decides CPU rounding, and so the scores
    scatter_plot(out / "rank_study.png", scratch, {name: [r[name] for r in rows] for name in ("inherited", "finetuned")})
    configs.write_text_atomic(out / "rank_study.json", json.dumps(json_safe(result), indent=2))  # strict JSON: a NaN score is null; last (STUDY_DONE)
    return result
