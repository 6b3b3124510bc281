"""Vectorised conversion of raw string columns to labels, dense floats and category codes.

Categorical strings become *codes* through one polars `Categories` per field: a string->u32
dictionary kept in Rust that grows as new values appear, so the same string gets the same
code in every chunk without per-row Python, and counting is a `np.bincount`. After pass 1
the codes are remapped to final ids (frequency-ranked vocabulary with a min-count, or
modulo hashing), which in pass 2 is a plain array gather. A missing value (empty string or
null) is a category of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from recnas.data import vocab
from recnas.data.formats import Format
from recnas.errors import DataError

FLOAT32_MAX = float(np.finfo(np.float32).max)  # dense values are stored as float32
SHOWN_CHARS = 80  # of a bad value in an error message or a bad_row_examples entry
MISSING = ""  # the category of an empty/null value (and of a key absent from a joined table)


@dataclass
class Encoded:
    """One chunk, converted. Rows with `bad` set must be dropped (or reported)."""

    label: np.ndarray  # uint8 [n]
    dense: np.ndarray  # float32 [n, n_dense]
    codes: np.ndarray  # uint32 [n, n_cat]
    bad: np.ndarray  # bool [n]
    explain: Callable[[int], str]  # reason for bad row i


def _floats(df: pl.DataFrame, cols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """float64 [n, k] (NaN where missing or unparseable) and the present-but-unparseable mask.

    One `select` so polars converts all columns in parallel.
    """
    present = [(pl.col(c).str.len_bytes() > 0) if df.schema[c] == pl.String else pl.col(c).is_not_null() for c in cols]
    frame = df.select(
        *(pl.col(c).cast(pl.Float64, strict=False).alias(f"v{j}") for j, c in enumerate(cols)),
        *(p.alias(f"p{j}") for j, p in enumerate(present)),
    )
    k = len(cols)
    x = frame.select(frame.columns[:k]).to_numpy().astype(np.float64, copy=False)
    if not x.flags.writeable:  # a single column can come back as a read-only view of polars' memory
        x = x.copy()
    finite = np.isfinite(x)
    unparsable = frame.select(frame.columns[k:]).to_numpy().astype(bool, copy=False) & ~finite
    np.copyto(x, np.nan, where=~finite)  # in place: no fresh [n, k] temporaries
    return x, unparsable


def _as_string(s: pl.Series) -> pl.Series:
    return (s if s.dtype == pl.String else s.cast(pl.String)).fill_null(MISSING)


def _derive(kind: str, s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Derived categoricals from a YYMMDDHH string: (values, bad mask)."""
    s = _as_string(s)
    date = s.str.slice(0, 6).str.strptime(pl.Date, "%y%m%d", strict=False)
    hour = s.str.slice(6, 2).cast(pl.Int32, strict=False)
    # eight digits: strptime alone takes e.g. ' 41021' as a date
    ok = s.str.contains(r"^[0-9]{8}$") & date.is_not_null() & hour.is_between(0, 23).fill_null(False)
    values = hour if kind == "hour_of_day" else date.dt.weekday()
    return values.cast(pl.String).fill_null(MISSING), ~ok


class Encoder:
    """Stateful across chunks: per-field categories and code counts (of good rows only)."""

    def __init__(self, fmt: Format, joined: bool = False):
        self.fmt = fmt
        self.joined = joined and fmt.join is not None
        self.cat_names = fmt.cat_names(self.joined)
        run = uuid.uuid4().hex  # a private namespace: two prepares in one process never share codes
        self.categories = {name: pl.Categories(name, namespace=f"recnas-{run}") for name in self.cat_names}
        if self.joined and fmt.join.key not in self.categories:
            self.categories[fmt.join.key] = pl.Categories(fmt.join.key, namespace=f"recnas-{run}-key")
        # polars frees a Categories mapping once no Series uses it, which would restart the
        # codes at 0 in the next chunk; one live Series per field keeps each mapping alive.
        self._anchors = [pl.Series([MISSING]).cast(pl.Categorical(c)) for c in self.categories.values()]
        self.counts = [np.zeros(0, np.int64) for _ in self.cat_names]
        self._side: list[np.ndarray] = []  # per joined column: code by key code
        self._side_missing: list[int] = []

    # -- codes -------------------------------------------------------------------------------
    def _codes(self, name: str, s: pl.Series) -> np.ndarray:
        return _as_string(s).cast(pl.Categorical(self.categories[name])).to_physical().to_numpy().astype(np.uint32, copy=False)

    def load_side(self, table: pl.DataFrame) -> None:
        """Index a joined table (e.g. the KDD12 user profile) by the code of its key."""
        join = self.fmt.join
        key = self._codes(join.key, table.get_column(join.key))
        size = int(key.max()) + 1 if len(key) else 0
        _, first_from_end = np.unique(key[::-1], return_index=True)
        last = len(key) - 1 - first_from_end  # a repeated key: its last row wins
        for col in join.columns:
            missing = int(self._codes(col, pl.Series([MISSING]))[0])
            side = np.full(size, missing, np.uint32)
            side[key[last]] = self._codes(col, table.get_column(col))[last]
            self._side.append(side)
            self._side_missing.append(missing)

    def _lookup(self, key: np.ndarray) -> list[np.ndarray]:
        out = []
        for side, missing in zip(self._side, self._side_missing):
            inside = key < len(side)
            out.append(np.where(inside, side[np.where(inside, key, 0)] if len(side) else missing, missing).astype(np.uint32))
        return out

    # -- one chunk ---------------------------------------------------------------------------
    def encode(self, df: pl.DataFrame) -> Encoded:
        fmt, n = self.fmt, df.height
        checks: list[tuple[np.ndarray, str, pl.Series]] = []  # (bad mask, what, raw values)

        x, unparsable = _floats(df, [fmt.label, *fmt.dense])
        y = x[:, 0]
        with np.errstate(invalid="ignore"):
            if fmt.label_mode == "binary":
                ok, what = (y == 0) | (y == 1), f"column {fmt.label} (the label): not 0 or 1"
            else:
                ok, what = (y >= 0) & (y == np.floor(y)), f"column {fmt.label} (the label): not a non-negative integer count"
            label = y > 0
        checks.append((~ok, what, df.get_column(fmt.label)))
        for j, col in enumerate(fmt.dense):
            checks.append((unparsable[:, 1 + j], f"column {col}: not a finite number", df.get_column(col)))
        x = x[:, 1:]
        np.copyto(x, 0.0, where=np.isnan(x))  # missing -> 0 (in place, like the transform)
        if fmt.dense_transform == "log1p":
            np.log1p(np.maximum(x, 0.0, out=x), out=x)  # at most ~710: always fits float32
        else:  # kept as is: a value past float32's range would be stored as inf
            huge = np.abs(x) > FLOAT32_MAX
            for j, col in enumerate(fmt.dense):
                checks.append((huge[:, j], f"column {col}: beyond the float32 range (|x| > {FLOAT32_MAX:.4g}; dense_transform: none keeps values as they are)", df.get_column(col)))
        with np.errstate(over="ignore"):  # only rows made bad above overflow
            dense = x.astype(np.float32)

        codes = np.empty((n, len(self.cat_names)), np.uint32)
        if fmt.categorical:
            codes[:, : len(fmt.categorical)] = df.select(
                # text input arrives as non-null strings: skip the no-op cast and fill_null there
                (pl.col(c) if df.schema[c] == pl.String and not df.get_column(c).has_nulls() else pl.col(c).cast(pl.String).fill_null(MISSING))
                .cast(pl.Categorical(self.categories[c]))
                .to_physical()
                for c in fmt.categorical
            ).to_numpy()
        base = len(fmt.categorical)
        for j, d in enumerate(fmt.derived):
            values, bad = _derive(d.kind, df.get_column(d.source))
            codes[:, base + j] = self._codes(d.name, values)
            checks.append((bad.to_numpy(), f"column {d.source}: not a YYMMDDHH timestamp", df.get_column(d.source)))
        if self.joined:
            key_col = fmt.join.key
            key = codes[:, self.cat_names.index(key_col)] if key_col in self.cat_names else self._codes(key_col, df.get_column(key_col))
            for j, joined in enumerate(self._lookup(key)):
                codes[:, base + len(fmt.derived) + j] = joined

        bad = np.zeros(n, bool)
        for mask, _, _ in checks:
            bad |= mask

        def explain(i: int) -> str:
            for mask, what, raw in checks:
                if mask[i]:
                    value = raw[i]
                    if value is None or value == "":  # a text file's empty cell (pyarrow: null) or a Parquet null
                        return f"{what} (empty)"
                    shown = repr(value)  # a binary or runaway value: its start, not megabytes
                    return f"{what} ({shown if len(shown) <= SHOWN_CHARS else shown[: SHOWN_CHARS - 3] + '...'})"
            return "bad row"

        return Encoded(label.astype(np.uint8), dense, codes, bad, explain)

    def count(self, codes: np.ndarray) -> None:
        for j in range(codes.shape[1]):
            c = np.bincount(codes[:, j])
            if len(c) > len(self.counts[j]):
                self.counts[j] = np.concatenate([self.counts[j], np.zeros(len(c) - len(self.counts[j]), np.int64)])
            self.counts[j][: len(c)] += c

    # -- final ids ---------------------------------------------------------------------------
    def vocabulary(self, min_count: int) -> tuple[list[np.ndarray], list[int]]:
        """Per field: code -> id (0 = OOV/rare, 1.. by descending count, ties by first appearance)."""
        remaps, sizes = [], []
        for counts in self.counts:
            order = np.argsort(-counts, kind="stable")
            kept = order[counts[order] >= max(min_count, 1)]
            remap = np.zeros(len(counts), np.int32)
            remap[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
            remaps.append(remap)
            sizes.append(len(kept) + 1)
        return remaps, sizes

    def values(self, name: str) -> pl.Series:
        """A field's strings by code (the value of code k at position k)."""
        strings = self.categories[name].to_series()
        if len(strings) < len(self.counts[self.cat_names.index(name)]):
            raise DataError(f"internal: the category table of {name} is shorter than its codes")
        return strings

    def hashed(self, buckets: int) -> tuple[list[np.ndarray], list[int]]:
        """Per field: code -> stable_hash(value) % buckets (same ids in every run and version)."""
        remaps = []
        for name, counts in zip(self.cat_names, self.counts):
            h = stable_hash(self.values(name)[: len(counts)])
            remaps.append((h % np.uint64(buckets)).astype(np.int32))
        return remaps, [buckets] * len(remaps)

    def save_vocabulary(self, path: Path, remaps: list[np.ndarray]) -> None:
        """Write the kept values of every field in id order (`vocab.save`), one field in memory at a time."""
        vocab.save(path, self.cat_names, self.values, remaps)

    def saved_vocabulary(self, path: Path, sizes: list[int]) -> tuple[list[np.ndarray], list[int], dict[str, int]]:
        """Per field: code -> id of another store's saved vocabulary (`path`, table `sizes`), 0 for
        a value it does not hold; and per field the number of rows with such unseen values."""
        remaps, unseen = [], {}
        for name, counts, size in zip(self.cat_names, self.counts, sizes):
            remap, unseen[name] = vocab.remap_from(path, name, self.values(name), counts, size)
            remaps.append(remap)
        return remaps, list(sizes), unseen


def stable_hash(strings: pl.Series) -> np.ndarray:
    """64-bit FNV-1a of each string's UTF-8 bytes plus a splitmix64 finaliser, vectorised.

    Unlike polars' hash it does not change between library versions, so hash-bucket ids are
    reproducible. Loops over byte positions, not rows (categorical values are short).
    """
    arr = strings.to_arrow().cast(pa.large_binary())
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    h = np.full(n, 0xCBF29CE484222325, np.uint64)
    prime = np.uint64(0x100000001B3)
    for k in range(int(lengths.max()) if n else 0):
        idx = np.flatnonzero(lengths > k)
        h[idx] = (h[idx] ^ data[offsets[idx] + k].astype(np.uint64)) * prime
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h
