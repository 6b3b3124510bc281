"""On-disk columnar store: one `.npy` file per column group and split, memory-mapped on read.

Why `.npy` and not Parquet: training reads random mini-batches of fixed-width numeric rows;
a memory-mapped array gives zero-copy slicing and fancy indexing at memory speed with no
decode step, and `np.load(mmap_mode="r")` needs nothing beyond numpy. Layout::

    DIR/meta.json                  written last: its presence marks a complete store
    DIR/<split>/dense.npy          float32 [rows, n_dense]  (already log-transformed)
    DIR/<split>/sparse.npy         int32   [rows, n_sparse] (per-field ids, 0 = OOV/rare)
    DIR/<split>/label.npy          float32 [rows]
    DIR/vocab.parquet              the vocabulary, to encode other files alike (recnas.data.vocab)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recnas.data.schema import SPLITS, DatasetMeta
from recnas.errors import ConfigError, DataError, RecnasError
from recnas.staging import OutputDir, check_output_dir, naming

COLUMNS = {"dense": np.float32, "sparse": np.int32, "label": np.float32}


@dataclass
class SplitArrays:
    """The three arrays of one split (numpy arrays or read-only memory maps)."""

    dense: np.ndarray
    sparse: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, index: np.ndarray | slice) -> "SplitArrays":
        """The rows `index` selects (an index array or a slice) of all three arrays."""
        return SplitArrays(self.dense[index], self.sparse[index], self.label[index])


HUGE_DENSE = 1e6  # a log1p store's values stay below ~710; raw ones this large overflow a model's activations


def huge_dense_note(store: "CTRStore", split: str = "train") -> str | None:
    """A sentence when the store's dense features reach HUGE_DENSE in magnitude (a store
    prepared with `dense_transform: none` from raw values up to 1e30, say), read from at most
    2^20 rows of `split`: models trained on them diverge at any lr, or finish with a log loss of
    nothing (train loss ~1e28) without a word, and a model trained on ordinary values gives NaN
    logits on such validation rows; None otherwise."""
    if not store.meta.n_dense:
        return None
    try:
        dense = store.split(split).dense[: 1 << 20]
        top = float(np.abs(dense).max()) if dense.size else 0.0
    except (RecnasError, OSError, ValueError):
        return None
    if not top >= HUGE_DENSE:
        return None
    raw = (store.meta.encoding or {}).get("dense_transform") == "none"
    return (f"the {split} split's dense features reach |x| = {top:.3g}{' (prepared with dense_transform: none)' if raw else ''}: "
            "models diverge or learn nothing at such magnitudes; prepare the data with dense_transform: log1p, or scale those columns")


def one_class_notes(meta: DatasetMeta) -> list[str]:
    """One sentence per split with rows whose labels are all 0 (or all 1), from `meta.json`.

    Nothing fails on such data: a model trained on a train split of one class learns to predict
    that class for every row, and reaches a validation log loss near 0 on a validation split
    of the same class, while AUC is undefined (n/a) on a split of one class. So all labels 0,
    or a click rate so low that the 8:1:1 split leaves the train split without a click, gave
    results that looked fine. The commands print these notes as warnings."""
    notes = []
    for split in SPLITS:
        rows, rate = meta.rows.get(split, 0), meta.positive_rate.get(split)
        if not rows or rate not in (0.0, 1.0):
            continue
        what = f"the {split} split holds {'no clicks (every label 0)' if rate == 0.0 else 'only clicks (every label 1)'}"
        if split == "train":
            notes.append(f"{what}: a model trained on it learns to predict {'no click' if rate == 0.0 else 'a click'} for every row, "
                         "so its log losses say nothing, and AUC is undefined (n/a); check the label column, or give more rows or clicks")
        else:
            notes.append(f"{what}: AUC is undefined (n/a) on it")
    return notes


class CTRStore:
    """A prepared dataset directory: `meta` plus lazily memory-mapped splits."""

    CHECK_ROWS = 1 << 20  # rows per chunk of the value check: bounded memory on any store

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.meta = DatasetMeta.load(self.dir)
        self._checked: set[str] = set()

    def _check_not_replaced(self) -> None:
        """Refuse a split of a store made again in place (`--overwrite` swaps in a new folder)
        since this object read its meta: splits are opened as a run needs them, so a search went
        on with a supernet trained on the old rows and baselines trained on the new (an
        IndexError deep in an embedding where the vocabularies differed, silently where not).
        By its meta.json, not the folder's inode (not stable on some FUSE mounts): a store made
        again alike (same source and options) holds the same rows."""
        try:
            same = DatasetMeta.load(self.dir) == self.meta
        except DataError:  # gone, or caught mid-swap
            same = False
        if not same:
            raise DataError(f"{self.dir} was replaced by another command (e.g. `recnas data ... --overwrite`) while this one was reading it; "
                            "its rows are no longer the ones this run started on: run the command again")

    def check_trainable(self) -> None:
        """Refuse a store without training rows (one prepared with `--split none`, for scoring)
        before anything is trained or written for it."""
        if len(self.split("train")) == 0:
            scoring = self.meta.source.get("options", {}).get("split") == "none"
            raise DataError("the train split has no rows" + (f": {self.dir} was prepared with --split none (every row in test), to score with a model trained on another store, not to train on" if scoring else ""))

    def split(self, name: str) -> SplitArrays:
        """The arrays of split `name` (train, val or test), memory-mapped read-only. The first
        read of a split checks its values (finite dense values, ids within the vocabularies,
        0/1 labels); a missing, corrupt or inconsistent split is a DataError."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        arrays = {}
        for col, dtype in COLUMNS.items():
            path = self.dir / name / f"{col}.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                self._check_not_replaced()  # or caught mid-swap, the folder gone for a moment
                raise DataError(f"{path}: missing; the store at {self.dir} is incomplete") from None
            except (ValueError, EOFError, OSError) as exc:  # EOFError: an empty or truncated file
                self._check_not_replaced()
                raise DataError(f"{path}: corrupt array file ({str(exc) or type(exc).__name__})") from None  # an exception is always true: `exc or` never fell back
            if arr.dtype != dtype:
                raise DataError(f"{path}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
            arrays[col] = arr
        self._check_not_replaced()  # after the opens: all three are of the store the meta is
        n = arrays["label"].shape[0]
        if arrays["dense"].shape != (n, self.meta.n_dense) or arrays["sparse"].shape != (n, self.meta.n_sparse):
            raise DataError(f"{self.dir / name}: array shapes disagree with meta.json")
        if name in self.meta.rows and self.meta.rows[name] != n:
            raise DataError(f"{self.dir / name}: {n:,} rows, meta.json says {self.meta.rows[name]:,}; the store is inconsistent")
        if name not in self._checked:
            self._check_values(name, **arrays)
            self._checked.add(name)
        return SplitArrays(**arrays)

    def _check_values(self, name: str, dense: np.ndarray, sparse: np.ndarray, label: np.ndarray) -> None:
        """Finite dense values, ids within each field's vocabulary and 0/1 labels, once per split
        and store object: an edited or foreign store otherwise fails deep in an embedding lookup
        or a metric, or trains on nonsense. One chunked pass, about 0.2 s per GB in memory."""
        vocab = np.asarray(self.meta.vocab_sizes)
        for start in range(0, len(label), self.CHECK_ROWS):
            ids, y = sparse[start : start + self.CHECK_ROWS], label[start : start + self.CHECK_ROWS]
            if not np.isfinite(dense[start : start + self.CHECK_ROWS]).all():
                raise DataError(f"{self.dir / name}/dense.npy: non-finite (NaN or infinite) values; prepared stores never hold them")
            outside = (ids.min(axis=0) < 0) | (ids.max(axis=0) >= vocab) if len(ids) else np.zeros(0, bool)
            if outside.any():
                field = int(np.flatnonzero(outside)[0])
                raise DataError(f"{self.dir / name}/sparse.npy: field {self.meta.cat_names[field]} has ids outside 0..{vocab[field] - 1} (its vocabulary in meta.json)")
            if ((y != 0) & (y != 1)).any():
                raise DataError(f"{self.dir / name}/label.npy: labels must be 0 or 1, found {float(y[(y != 0) & (y != 1)][0])}")


class NpyAppender:
    """Streams rows into a `.npy` file whose final row count is unknown up front.

    The header is written with a fixed-width, space-padded shape and rewritten in place on
    `close()`, so no second copy of the data is ever made.
    """

    _HEADER_LEN = 128

    def __init__(self, path: str | os.PathLike, dtype, width: int | None):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.width = width
        self.rows = 0
        self._fh = open(self.path, "wb")
        with naming(self.path):
            self._fh.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        shape = (rows,) if self.width is None else (rows, self.width)
        d = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (self.dtype.str, shape)
        magic = b"\x93NUMPY\x01\x00"
        body_len = self._HEADER_LEN - len(magic) - 2
        body = d.ljust(body_len - 1) + "\n"
        return magic + len(body).to_bytes(2, "little") + body.encode("latin1")

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        expected = 1 if self.width is None else 2
        if block.ndim != expected or (self.width is not None and block.shape[1] != self.width):
            raise ValueError(f"{self.path.name}: block shape {block.shape} does not fit width {self.width}")
        with naming(self.path):  # a full disk or a file size limit: say which file
            self._fh.write(block.data)  # the array's own buffer: no bytes copy
        self.rows += block.shape[0]

    def close(self) -> None:
        if self._fh.closed:
            return
        with naming(self.path):
            try:
                self._fh.seek(0)
                self._fh.write(self._header(self.rows))
            finally:
                self._fh.close()  # flushes what is buffered: may fail too


def check_apart(path: str | os.PathLike, out: str | os.PathLike, what: str, where: str = "--out") -> None:
    """Refuse `path` equal to or inside the dir `out`: replacing `out` would delete it."""
    real, real_out = Path(path).resolve(), Path(out).resolve()
    if real == real_out or real_out in real.parents:
        raise DataError(f"{what} {path} is {'the same path as' if real == real_out else 'inside'} {where} {out}; they must not overlap (the store replaces the whole folder)")


STORE = OutputDir("recnas store", "meta.json", DataError, names=("meta.json", "vocab.parquet", *SPLITS))  # what --overwrite may replace


def check_run_folder(out: str | os.PathLike) -> None:
    """A run's --out (training, search, rank study): creatable (`check_output_dir`), and outside
    the results that are replaced whole (`check_outside_results`)."""
    check_output_dir(out)
    check_outside_results(out, "--out")


def check_outside_results(path: str | os.PathLike, what: str) -> None:
    """An output (`what`: its flag) neither at nor inside a data store or an embedding search
    result, whose --overwrite it would then block (`OutputDir.check_outside`); a training run's
    --overwrite there also replaced the search result's model.pt."""
    from recnas.embedding.pipeline import OUTPUT as EMBED_RESULT  # imports this module

    for kind in (STORE, EMBED_RESULT):
        kind.check_outside(path, what, ConfigError)


@contextlib.contextmanager
def staged_store(out: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """A staging store beside `out` (split folders made, `out` locked against a second run),
    swapped in as `out` when the block ends; the block must `finish_store` it last. When the
    block raises, the staging store is removed and `out` is left as it was."""
    with STORE.staged(out, overwrite) as tmp:
        for split in SPLITS:
            (tmp / split).mkdir()
        yield tmp
        if not (tmp / "meta.json").is_file():  # a writer's bug: never swap in a store without its marker
            raise RuntimeError(f"staged store for {out} was not finished (no meta.json)")


def check_split_rows(rows: dict[str, int], out: str | os.PathLike, required: tuple[str, ...] = SPLITS) -> None:
    """Refuse a store with an empty split: training would validate on nothing and evaluate
    would report n/a with success, so an input too small to split is an error here, where
    the row counts are first known, not a silent n/a later. A store to score (`--split none`)
    requires only its test split."""
    if all(rows.get(s, 0) >= 1 for s in required):
        return
    got = ", ".join(f"{s} {rows.get(s, 0):,}" for s in SPLITS)
    raise DataError(f"{out}: the splits would get {got} rows; every split needs at least one row (the 8:1:1 split needs at least 10 input rows)")


def finish_store(tmp: Path, out: str | os.PathLike, meta: DatasetMeta, required: tuple[str, ...] = SPLITS) -> None:
    """Check the split sizes (`required` ones non-empty) and write meta.json, the marker of a
    complete store: the last write into a `staged_store`, whose block end swaps it in (the old
    store is kept until then)."""
    check_split_rows(meta.rows, out, required)
    meta.save(tmp)


def write_store(out: str | os.PathLike, splits: dict[str, SplitArrays], meta: DatasetMeta, overwrite: bool = False) -> Path:
    """Write in-memory splits (one `SplitArrays` per name of SPLITS) as a complete store at
    `out`, described by `meta` with its `rows` counted from the splits; returns `out`. The
    caller's `meta` is left as it is (a copy is saved): its `rows` used to be replaced, so the
    store it came from, read on, refused its own splits as inconsistent with them."""
    missing = [name for name in SPLITS if name not in splits]
    if missing:
        raise DataError(f"write_store needs every split ({', '.join(SPLITS)}); {', '.join(missing)} missing")
    for name in SPLITS:
        a = splits[name]
        if np.shape(a.dense)[1:] != (meta.n_dense,) or np.shape(a.sparse)[1:] != (meta.n_sparse,) or not len(a.dense) == len(a.sparse) == len(a.label):
            raise DataError(
                f"write_store: the {name} split's arrays (dense {list(np.shape(a.dense))}, sparse {list(np.shape(a.sparse))}, label {list(np.shape(a.label))}) "
                f"do not fit meta's {meta.n_dense} dense and {meta.n_sparse} categorical fields"
            )
    meta = meta.model_copy(deep=True, update={"rows": {name: len(splits[name]) for name in SPLITS}})
    with staged_store(out, overwrite) as tmp:
        for name in SPLITS:
            arrays = splits[name]
            for col, dtype in COLUMNS.items():
                np.save(tmp / name / f"{col}.npy", np.ascontiguousarray(getattr(arrays, col), dtype=dtype))
        finish_store(tmp, out, meta)
    return Path(out)
