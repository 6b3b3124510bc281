"""`recnas data prepare` (raw CTR file -> store) and `recnas data synth` (synthetic benchmark)."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from recnas.cli.options import PROGRESS
from recnas.cli.paths import path_option
from recnas.limits import SEED_MAX

app = typer.Typer(no_args_is_help=True, help="Prepare raw CTR data or generate the synthetic benchmark.")


class Dataset(str, Enum):
    criteo = "criteo"
    avazu = "avazu"
    kdd12 = "kdd12"
    csv = "csv"


class SplitMethod(str, Enum):
    stratified = "stratified"
    sequential = "sequential"
    none = "none"


class BadRowPolicy(str, Enum):
    error = "error"
    skip = "skip"


def summary(meta, elapsed: float) -> str:
    """A few lines: rows per split, vocabulary sizes, bad rows, time and throughput."""
    total = sum(meta.rows.values())
    # an empty split (--split none) has no positive rate: "train 0 (pos 0.0000)" read as a split of no clicks
    splits = ", ".join(f"{k} {v:,}" + (f" (pos {meta.positive_rate.get(k, 0.0):.4f})" if v else "") for k, v in meta.rows.items())
    vocab = ", ".join(f"{n}={v:,}" for n, v in zip(meta.cat_names, meta.vocab_sizes)) or "none (no categorical fields)"
    return "\n".join(
        [
            f"{meta.name}: {total:,} rows in {elapsed:.1f}s ({total / max(elapsed, 1e-9):,.0f} rows/s); {meta.n_dense} dense, {meta.n_sparse} categorical",
            f"  splits: {splits}",
            f"  vocab sizes (incl. OOV id 0): {vocab}" if not meta.source.get("options", {}).get("hash_buckets") else f"  hash buckets per field: {meta.vocab_sizes[0] if meta.vocab_sizes else 0:,}",
            f"  bad rows skipped: {meta.bad_rows_skipped:,}",
            *_unseen(meta),
        ]
    )


def _unseen(meta) -> list[str]:
    """The line on values the --vocab-from store never kept (they got the OOV id 0), if any."""
    base = meta.source.get("vocab_from")
    if not base:
        return []
    unseen = base.get("unseen_rows")
    if unseen is None:
        return [f"  ids from {base['store']} (hash buckets: no unseen values)"]
    total, cells = sum(unseen.values()), sum(meta.rows.values()) * max(len(unseen), 1)
    worst = ", ".join(f"{k} {v:,}" for k, v in sorted(unseen.items(), key=lambda kv: -kv[1])[:5] if v)
    return [f"  ids from {base['store']}: {total:,} of {cells:,} values unseen there (OOV id 0){'; most in ' + worst if worst else ''}"]


@app.command()
def prepare(
    dataset: Dataset = typer.Option(..., "--dataset", help="raw format; csv needs --spec"),
    raw: Path = path_option(..., "--raw", help="raw file (.gz accepted for text formats)"),
    out: Path = path_option(..., "--out", help="store directory to create"),
    spec: Optional[Path] = path_option(None, "--spec", help="YAML feature spec (--dataset csv)"),
    profile: Optional[Path] = path_option(None, "--profile", help="KDD12 userid_profile.txt (adds gender, age)"),
    min_count: Optional[int] = typer.Option(None, "--min-count", help="values seen fewer times map to the OOV id 0 (default 1; or --hash-buckets)"),
    hash_buckets: Optional[int] = typer.Option(None, "--hash-buckets", help="hash values into N ids per field instead of a vocabulary (N at most 2,147,483,648: int32 ids)"),
    split: SplitMethod = typer.Option(SplitMethod.stratified, "--split", help="stratified 8:1:1 (seeded), sequential 80/10/10, or none (every row in test: data to score)"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, max=SEED_MAX, help="seed of the stratified split (default 2018)"),
    on_bad_row: BadRowPolicy = typer.Option(BadRowPolicy.error, "--on-bad-row", help="error: stop at the first bad row; skip: drop and count"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing store (kept if this run fails)"),
    max_rows: Optional[int] = typer.Option(None, "--max-rows", help="stop after N valid rows (N >= 1; default: the whole file)"),
    vocab_from: Optional[Path] = path_option(None, "--vocab-from", help="a store to take the ids from (its vocabulary or hash buckets), so models trained on it accept this one"),
    progress: bool = PROGRESS,
) -> None:
    """Stream a raw CTR file into a memory-mappable store with train/val/test splits."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from recnas.data.prepare import prepare as run_prepare

    started = time.perf_counter()
    console = Console()  # drawn only where it can be erased: piped (or TERM=dumb) it left a blank line before the summary
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(), console=console, transient=True, disable=not (progress and console.is_interactive)) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = "pass 1: parse" if phase == "read" else "pass 2: write"
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        meta = run_prepare(
            dataset.value,
            raw,
            out,
            spec=spec,
            profile=profile,
            min_count=min_count,
            hash_buckets=hash_buckets,
            split=split.value,
            seed=seed,
            on_bad_row=on_bad_row.value,
            overwrite=overwrite,
            max_rows=max_rows,
            vocab_from=vocab_from,
            progress=progress,
        )
    typer.echo(summary(meta, time.perf_counter() - started))
    typer.echo(f"  store: {out}")
    _warn_about(meta, out)


def _warn_about(meta, out: Path) -> None:
    """What a written store holds that no model can learn from: splits of one class, fields of
    one id, dense features of a huge magnitude (each a warning; the store is kept)."""
    from recnas.data.store import CTRStore, huge_dense_note, one_class_notes

    for note in [*one_class_notes(meta), *_no_information(meta), huge_dense_note(CTRStore(out))]:
        if note is not None:
            typer.echo(f"warning: {note}", err=True)


def _no_information(meta) -> list[str]:
    """Fields whose every value got one id (a --min-count above every value's count, or a single
    hash bucket): the store is written and trains, but those fields tell a model nothing."""
    encoding = meta.encoding or {}
    if meta.source.get("vocab_from") or not meta.vocab_sizes:
        return []
    if encoding.get("kind") == "hash" and encoding.get("buckets") == 1:
        return ["--hash-buckets 1 gives every value of every categorical field the one id 0: those fields carry no information"]
    empty = [name for name, size in zip(meta.cat_names, meta.vocab_sizes) if size == 1]
    if encoding.get("kind") != "vocabulary" or not empty:
        return []
    shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
    return [f"{len(empty)} of {meta.n_sparse} categorical field(s) kept no value ({shown}): each value was seen fewer than "
            f"--min-count {encoding.get('min_count')} times, so all map to the OOV id 0 and carry no information; lower --min-count"]


@app.command()
def synth(
    out: Path = path_option(..., "--out", help="store directory to create"),
    rows: int = typer.Option(200_000, "--rows", help="number of rows (100 to 500,000,000)"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="generator seed"),
    raw_out: Optional[Path] = path_option(None, "--raw-out", help="also write the rows as a Criteo-format text file"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing store"),
) -> None:
    """Generate the synthetic CTR benchmark (known Bayes-optimal loss) as a store."""
    from recnas.data.synthetic import generate  # written separately; imported only when used

    started = time.perf_counter()
    meta = generate(out, rows=rows, seed=seed, raw_out=raw_out, overwrite=overwrite)
    typer.echo(summary(meta, time.perf_counter() - started))
    typer.echo(f"  store: {out}")
