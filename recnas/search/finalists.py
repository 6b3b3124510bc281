"""The job's finalists: the best candidates of the search, by search score, trained from
scratch with the `final` recipe (all to the end, or by successive halving) and chosen by
validation log loss; the winner is copied to best/."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from recnas.configs import write_text_atomic
from recnas.data.store import CTRStore
from recnas.errors import CheckpointError, TrainingDiverged
from recnas.search.console import stage
from recnas.search.fitting import fit_or_load, fit_selected, subnet_builder, warn_diverged_points
from recnas.search.halving import successive_halving
from recnas.search.job import JobConfig, grid_points
from recnas.search.ranking import is_score, nan_last
from recnas.staging import copy_dir
from recnas.train.checkpoint import load_checkpoint
from recnas.train.metrics import counted
from recnas.train.model_factory import subnet_spec
from recnas.train.trainer import CHECKPOINT_FILE, MODEL_FILE


def train_finalists(evo, evo_result, cfg: JobConfig, space, store, out: Path, progress: bool, device, console: Console) -> tuple[dict, list[dict], list[dict]]:
    """Train the job's finalists in `out`/finalists/<key> and copy the one of the lowest
    validation log loss to `out`/best (its architecture to best_arch.json, its PIM configuration
    to best_hardware.json); returns the chosen finalist, every finalist trained to the end, and
    the records of those dropped (by halving, or diverged)."""
    meta = store.meta
    ranked, archs = [], set()
    for key, score in evo_result.ranked():  # distinct architectures: in co-design one arch comes with many PIM configs
        if len(ranked) == cfg.finalists:
            break
        if (g := evo.genotype(key)).arch.hash not in archs:
            archs.add(g.arch.hash)
            ranked.append((key, score, g))
    dropped, reserve = [], []
    if cfg.finalist_selection == "halving" and len(ranked) > 1:
        stage(console, "retrain", f"{len(ranked)} finalists by successive halving: each rung trains the better half one more evaluation interval" + _fewer(ranked, cfg))
        survivor, dropped = _halve(ranked, cfg, space, store, out / "finalists", progress, console)
        console.print("    dropped " + ", ".join(f"{d['key']} (rung {d['rung']}, " + ("diverged" if "diverged" in d else f"val {d['val_logloss']:.4f}") + ")" for d in dropped))
        to_train = [r for r in ranked if r[0] == survivor]
        # where the survivor diverges while training on to the end, the dropped that trained
        # furthest (the best of them first) go on in its place: it used to end the job
        reserve = sorted((d for d in dropped if isinstance(d["val_logloss"], float) and math.isfinite(d["val_logloss"])), key=lambda d: (-d["rung"], d["val_logloss"]))
    else:
        points = len(grid_points(cfg.final_grid))
        grid = (f", at each of the {points} points of final_grid" if points > 1 else ", at the one point of final_grid") if cfg.final_grid else ""
        stage(console, "retrain", ("the best architecture from scratch" if len(ranked) == 1 else f"the best {len(ranked)} architectures from scratch") + grid + ("" if len(ranked) == 1 and points == 1 else "; the lowest validation log loss wins") + _fewer(ranked, cfg))
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
        warn_diverged_points(fit, console)
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
    return chosen, finalists, dropped


def _fewer(ranked: list, cfg: JobConfig) -> str:
    """The stage line's note when the search scored fewer distinct architectures than `finalists`."""
    if len(ranked) >= cfg.finalists:
        return ""
    return f" (finalists: {cfg.finalists}, but the search scored only {counted(len(ranked), 'distinct architecture')})"


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


def best_finalist(finalists: list[dict]) -> dict:
    """The finalist of the lowest validation log loss; one that is not a number (NaN logits)
    last: `min` returned a NaN one that came first."""
    return min(finalists, key=lambda f: nan_last(f["val_logloss"]))


def _other_models(folder: str, names: list[str]) -> list[str]:
    """For `copy_dir`: the subfolders of a model's folder that hold models of their own (a
    `tables-<digest>` phase, a `final_grid` point), which best/ must not carry as the winner's."""
    return [n for n in names if any((Path(folder) / n / f).exists() for f in (MODEL_FILE, CHECKPOINT_FILE))]


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
