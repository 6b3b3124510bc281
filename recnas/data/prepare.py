"""`prepare`: raw CTR file -> self-describing `.npy` store, in two streaming passes.

Pass 1 parses the text once (`rawio`), converts each chunk vectorised (`encode`), counts
category codes and spools label/dense/codes to fixed-width temp files. Between passes the
vocabularies (or hash tables) and the split of every row are decided; the split needs only
the labels (1 byte/row). Pass 2 reads the spool back segment by segment (two worker threads),
remaps codes to ids with one gather and appends each row to its split's `.npy` files. Memory
is bounded by the chunk size plus the vocabularies, never by the file size.

Everything is written into a staging directory beside `out` and swapped in at the end, so an
interrupted or failed run leaves no half-written store and keeps the previous one.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import polars as pl
import pyarrow as pa

from recnas.data import splits as _splits
from recnas.data import vocab as _vocab
from recnas.data.encode import Encoder
from recnas.data.formats import BUILTIN, Format, builtin, load_spec
from recnas.data.rawio import RawReader, check_readable, prefetched
from recnas.data.schema import SPLITS, DatasetMeta
from recnas.data.store import COLUMNS, NpyAppender, check_apart, finish_store, staged_store
from recnas.errors import ConfigError, DataError
from recnas.staging import close_each, naming

DATASETS = (*BUILTIN, "csv")
BAD_ROW_POLICIES = ("error", "skip")
MAX_EXAMPLES = 5
DEFAULT_SEED = 2018  # of the stratified split
PASS2_ROWS = 1 << 16
MAX_HASH_BUCKETS = 1 << 31  # ids 0..N-1 must fit the store's int32 sparse arrays
Progress = Callable[[str, int, int], None]  # (phase "read" | "write", done, total)
# a headerless file one field short on its first line, or on every line: a file without its
# label column (Kaggle's Criteo test.txt), where "pass --on-bad-row skip" led to "no valid rows"
_ONE_SHORT = re.compile(r"expected (\d+) fields, found (\d+)$")
NO_LABEL_HINT = "; a file without its label column (as Kaggle's test files)? data to score needs one too: put a column of 0s in its place (docs/data.md, scoring new data)"


def _one_field_short(why: str) -> bool:
    """Whether a bad row's reason is "one field fewer than the format's"."""
    m = _ONE_SHORT.search(why)
    return m is not None and int(m[2]) == int(m[1]) - 1


class BadRows:
    """Applies --on-bad-row: raise on the first bad row, or count it and keep a few examples."""

    def __init__(self, policy: str):
        self.policy = policy
        self.count = 0
        self.examples: list[str] = []

    def report(self, path: Path, parse_bad: list[tuple[int, str]], lines: np.ndarray, index: np.ndarray, explain: Callable[[int], str], label: bool = True) -> None:
        """Bad rows of one chunk: dropped by the parser (`parse_bad`) or by conversion (`index`).
        `parse_bad` is sorted first: the reader appends the empty lines (and a Parquet file's
        undecodable values) after the other rows it dropped, so an error named a later line than
        the first bad one, and the examples could leave out the earliest."""
        n = len(parse_bad) + len(index)
        if n == 0:
            return
        room = 1 if self.policy == "error" else max(MAX_EXAMPLES - len(self.examples), 0)
        found = sorted(sorted(parse_bad)[:room] + [(int(lines[i]), int(i)) for i in index[:room]], key=lambda t: t[0])[:room]
        described = [(line, why if isinstance(why, str) else explain(why)) for line, why in found]
        if self.policy == "error":
            line, why = described[0]
            if label and line == 1 and _one_field_short(why):  # `label`: a file with a label column (not the --profile)
                raise DataError(f"{path}:{line}: {why}{NO_LABEL_HINT}")
            raise DataError(f"{path}:{line}: {why} (pass --on-bad-row skip to drop such rows)")
        self.examples += [f"{path.name}:{line}: {why}" for line, why in described]
        self.count += n


class _Spool:
    """Pass-1 rows in fixed-width temp files: uint8 labels in one file, float32 dense values and
    uint32 codes in segments of `segment_rows` rows. Pass 2 works segment by segment and deletes
    each one once it is written out, so the kernel reuses its page-cache pages for the output
    files instead of handing out fresh memory (on a VM, first-touched memory is expensive)."""

    def __init__(self, directory: Path, n_dense: int, n_cat: int, segment_rows: int = PASS2_ROWS):
        self.dir = directory
        self.widths = {"label": 1, "dense": n_dense, "codes": n_cat}
        self.dtypes = {"label": np.uint8, "dense": np.float32, "codes": np.uint32}
        self.segment_rows = segment_rows
        self._label = open(self.path("label"), "wb")
        self._fh: dict[str, BinaryIO] = {}
        self.rows = 0

    def path(self, key: str, segment: int = 0) -> Path:
        return self.dir / ("label.bin" if key == "label" else f"{key}.{segment:06d}.bin")

    def append(self, label: np.ndarray, dense: np.ndarray, codes: np.ndarray) -> None:
        with naming(self.path("label")):  # a full disk or a file size limit: an OSError naming no file
            self._label.write(np.ascontiguousarray(label, np.uint8).data)
        dense, codes = np.ascontiguousarray(dense, np.float32), np.ascontiguousarray(codes, np.uint32)
        done = 0
        while done < len(label):
            segment, offset = divmod(self.rows, self.segment_rows)
            if offset == 0:
                self._close_segment()
                self._fh = {key: open(self.path(key, segment), "wb") for key in ("dense", "codes")}
            take = min(self.segment_rows - offset, len(label) - done)
            for key, arr in (("dense", dense), ("codes", codes)):
                with naming(self.path(key, segment)):
                    self._fh[key].write(arr[done : done + take].data)
            done += take
            self.rows += take

    def _close_segment(self) -> None:
        handles, self._fh = list(self._fh.values()), {}
        if (failed := close_each(handles)) is not None:
            raise failed

    def close(self) -> None:
        try:
            with naming(self.path("label")):
                self._label.close()
        finally:
            self._close_segment()

    def labels(self) -> np.ndarray:
        return np.fromfile(self.path("label"), np.uint8, count=self.rows)

    @property
    def segments(self) -> int:
        return -(-self.rows // self.segment_rows)

    def segment(self, key: str, segment: int) -> np.ndarray:
        """One closed segment, memory-mapped read-only: gathers read straight from the page cache
        and the mapping goes with the array."""
        width, dtype = self.widths[key], np.dtype(self.dtypes[key])
        rows = min(self.segment_rows, self.rows - segment * self.segment_rows)
        if width == 0:
            return np.zeros((rows, 0), dtype)
        return np.asarray(np.memmap(self.path(key, segment), dtype, mode="r", shape=(rows, width)))

    def drop(self, segment: int) -> None:
        for key in ("dense", "codes"):
            self.path(key, segment).unlink()


def resolve_format(dataset: str, raw: str | os.PathLike, spec: str | os.PathLike | None) -> Format:
    if dataset == "csv":
        if spec is None:
            raise ConfigError("--dataset csv needs --spec SPEC.yaml (label, dense and categorical columns)")
        return load_spec(spec, raw)
    if spec is not None:
        raise ConfigError(f"--spec is only for --dataset csv; {dataset} has a built-in format")
    return builtin(dataset)


def _check_options(fmt: Format, profile, min_count, hash_buckets, split, seed, on_bad_row, max_rows) -> None:
    if min_count is not None and hash_buckets is not None:
        raise ConfigError("--min-count and --hash-buckets are alternatives; pass one")
    if min_count is not None and min_count < 1:
        raise ConfigError(f"--min-count must be >= 1, got {min_count}")
    if hash_buckets is not None and hash_buckets < 1:
        raise ConfigError(f"--hash-buckets must be >= 1, got {hash_buckets}")
    if hash_buckets is not None and hash_buckets > MAX_HASH_BUCKETS:  # larger ids would wrap to negative ones
        raise ConfigError(f"--hash-buckets must be at most {MAX_HASH_BUCKETS:,} (ids are stored as int32), got {hash_buckets:,}")
    if split not in _splits.METHODS:
        raise ConfigError(f"unknown --split {split!r}; expected one of {', '.join(_splits.METHODS)}")
    if seed is not None and split != "stratified":  # it would be ignored: the split keeps file order
        raise ConfigError(f"--seed only shuffles --split stratified; --split {split} keeps file order and takes no seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        # numpy refused it only after pass 1 had read the whole file, as a bare ValueError/TypeError
        raise ConfigError(f"--seed must be a non-negative integer, got {seed!r}")
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ConfigError(f"unknown --on-bad-row {on_bad_row!r}; expected one of {', '.join(BAD_ROW_POLICIES)}")
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"--max-rows must be >= 1, got {max_rows}")
    if profile is not None and fmt.join is None:
        raise ConfigError(f"--profile is only for kdd12 (the user profile join); {fmt.name} has none")


def _encoding_from(store: str | os.PathLike, fmt: Format, dataset: str, cat_names: list[str], raw: Path, out, min_count, hash_buckets) -> tuple[DatasetMeta, dict]:
    """The meta and saved encoding of the --vocab-from store, after checking that `raw` (format
    `fmt`) can be encoded like it: same dataset, fields and dense transform."""
    if min_count is not None or hash_buckets is not None:
        flag = "--min-count" if min_count is not None else "--hash-buckets"
        raise ConfigError(f"{flag} is decided by --vocab-from {store}: its ids are reused as they are; drop {flag}")
    meta = DatasetMeta.load(store)
    encoding = _vocab.encoding_of(meta, store)
    if encoding is None:
        raise DataError(f"--vocab-from {store} has no saved vocabulary (prepared before recnas saved one, or generated by `recnas data synth`), so {out} cannot get its ids; prepare {store} again from its raw file first")
    aspects = ("dataset", "categorical fields", "dense fields", "dense transform")
    theirs = (meta.source.get("dataset"), meta.cat_names, meta.dense_names, encoding.get("dense_transform", fmt.dense_transform))
    ours = (dataset, cat_names, list(fmt.dense), fmt.dense_transform)
    for what, a, b in zip(aspects, theirs, ours):
        if a != b:
            raise DataError(f"--vocab-from {store} and {raw} (for {out}) differ in their {what}: {_difference(a, b, store, raw)}; both must be the same format{_profile_hint(fmt, a, b, store)}")
    if encoding["kind"] == "vocabulary" and not (Path(store) / encoding["file"]).is_file():
        raise DataError(f"--vocab-from {store}: its vocabulary file {encoding['file']} is missing, so {out} cannot get its ids")
    return meta, encoding


def _difference(a, b, store, raw) -> str:
    """How two settings differ; for lists of names, the names one has and the other lacks (both
    lists shortened alike hid the difference: KDD12's Gender and Age come last)."""
    if not (isinstance(a, list) and isinstance(b, list)):
        return f"{_short(a)} vs {_short(b)}"
    only_a, only_b = [x for x in a if x not in b], [x for x in b if x not in a]
    parts = [f"only {where} has {_short(names)}" for where, names in ((store, only_a), (raw, only_b)) if names]
    return "; ".join(parts) or f"the same names in another order ({_short(a)} vs {_short(b)})"


def _profile_hint(fmt: Format, a, b, store) -> str:
    """KDD12: the profile join adds fields, so a store prepared with --profile needs it again."""
    if fmt.join is None or not (isinstance(a, list) and isinstance(b, list)):
        return ""
    if set(b) < set(a):
        return f" ({store} was prepared with --profile: give it again)"
    if set(a) < set(b):
        return f" ({store} was prepared without --profile: drop it)"
    return ""


def _short(value) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _load_side(encoder: Encoder, path: Path, bad: BadRows, block_bytes: int) -> dict:
    """Read the whole side table (e.g. KDD12 userid_profile.txt) and index it by key code."""
    tables = []
    with RawReader(path, encoder.fmt.join.table, block_bytes, what="profile file") as reader:
        for chunk in reader.chunks():
            bad.report(path, chunk.bad, chunk.lines, np.zeros(0, np.int64), str, label=False)
            tables.append(chunk.table)
        sha = reader.digest()
    df = pl.from_arrow(pa.concat_tables(tables))
    if df.height == 0:  # every row skipped as bad: the join would silently add nothing
        raise DataError(f"{path}: no valid rows ({bad.count} bad rows skipped)")
    encoder.load_side(df)
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": sha, "rows": df.height}


def _pass1(reader: RawReader, encoder: Encoder, spool: _Spool, bad: BadRows, max_rows: int | None, progress: Progress | None) -> None:
    path = reader.path
    with closing(prefetched((chunk, pl.from_arrow(chunk.table)) for chunk in reader.chunks())) as chunks:
        for chunk, df in chunks:
            enc = encoder.encode(df)
            keep = ~enc.bad
            if max_rows is not None and spool.rows + int(keep.sum()) > max_rows:
                cut = int(np.searchsorted(np.cumsum(keep), max_rows - spool.rows)) + 1
                keep[cut:] = False
                enc.bad[cut:] = False
                chunk.bad = [(line, why) for line, why in chunk.bad if line < chunk.lines[cut - 1]]
            bad.report(path, chunk.bad, chunk.lines, np.flatnonzero(enc.bad), enc.explain)
            if not keep.all():
                enc.label, enc.dense, enc.codes = enc.label[keep], enc.dense[keep], enc.codes[keep]
            encoder.count(enc.codes)
            spool.append(enc.label, enc.dense, enc.codes)
            if progress is not None:
                progress("read", chunk.bytes_read, reader.size)
            if max_rows is not None and spool.rows >= max_rows:
                break


def _pass2(spool: _Spool, labels: np.ndarray, remaps: list[np.ndarray], split_of: np.ndarray, tmp: Path, progress: Progress | None) -> tuple[dict, dict]:
    widths = {"dense": spool.widths["dense"], "sparse": spool.widths["codes"], "label": None}
    out = {s: {c: NpyAppender(tmp / s / f"{c}.npy", COLUMNS[c], widths[c]) for c in COLUMNS} for s in SPLITS}
    positives = dict.fromkeys(SPLITS, 0.0)
    # all fields' code -> id maps end to end: one gather over the [rows, fields] block instead
    # of a strided gather per field
    table = np.concatenate([np.zeros(0, np.int32), *(r.astype(np.int32, copy=False) for r in remaps)])
    offsets = np.cumsum([0, *(len(r) for r in remaps)])[:-1].astype(np.intp)
    rows, n_dense, n_cat = spool.segment_rows, spool.widths["dense"], spool.widths["codes"]

    def buffers() -> dict[str, np.ndarray]:
        shapes = {"dense": (rows, n_dense), "codes": (rows, n_cat), "index": (rows, n_cat), "ids": (rows, n_cat)}
        dtypes = {"dense": np.float32, "codes": np.uint32, "index": np.intp, "ids": np.int32}
        return {k: np.empty(shape, dtypes[k]) for k, shape in shapes.items()}

    def chunk(segment: int, buf: dict[str, np.ndarray]):
        # Every gather writes into buffers reused from segment to segment (fresh memory would
        # be faulted in and zeroed by the kernel each time) and the table index is built as
        # intp (np.take would otherwise convert it into a fresh array). Indices are always in
        # range, so mode="clip" changes nothing but lets np.take write straight into `out`.
        start = segment * rows
        stop = min(start + rows, spool.rows)
        n = stop - start
        part = split_of[start:stop]
        order = np.argsort(part, kind="stable")  # group rows by split, file order kept inside
        bounds = np.searchsorted(part[order], np.arange(len(SPLITS) + 1))
        label = labels[start:stop][order].astype(np.float32)
        dense = np.take(spool.segment("dense", segment), order, axis=0, out=buf["dense"][:n], mode="clip")
        codes = np.take(spool.segment("codes", segment), order, axis=0, out=buf["codes"][:n], mode="clip")
        index = np.add(codes, offsets, out=buf["index"][:n])
        ids = np.take(table, index, out=buf["ids"][:n], mode="clip")
        return segment, stop, label, dense, ids, bounds

    # numpy's sorts, gathers and casts release the GIL: two worker threads prepare the next
    # segments while this one writes the previous one, in file order
    pool = ThreadPoolExecutor(2, thread_name_prefix="recnas-pass2")
    free = [buffers() for _ in range(min(3, spool.segments))]
    pending: deque[tuple[dict, Future]] = deque()

    def write_next() -> None:
        buf, future = pending.popleft()
        segment, stop, label, dense, ids, bounds = future.result()
        for k, name in enumerate(SPLITS):
            part = slice(bounds[k], bounds[k + 1])
            out[name]["dense"].append(dense[part])
            out[name]["sparse"].append(ids[part])
            out[name]["label"].append(label[part])
            positives[name] += float(label[part].sum())
        free.append(buf)
        spool.drop(segment)
        if progress is not None:
            progress("write", stop, spool.rows)

    try:
        for segment in range(spool.segments):
            if not free:
                write_next()
            buf = free.pop()
            pending.append((buf, pool.submit(chunk, segment, buf)))
        while pending:
            write_next()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        failed = close_each(appender for cols in out.values() for appender in cols.values())
    if failed is not None:  # raised only when no error is on its way out already
        raise failed
    counts = {s: out[s]["label"].rows for s in SPLITS}
    rate = {s: positives[s] / counts[s] if counts[s] else 0.0 for s in SPLITS}
    return counts, rate


def prepare(
    dataset: str,
    raw: str | os.PathLike,
    out: str | os.PathLike,
    *,
    spec: str | os.PathLike | None = None,
    profile: str | os.PathLike | None = None,
    min_count: int | None = None,
    hash_buckets: int | None = None,
    split: str = "stratified",
    seed: int | None = None,
    on_bad_row: str = "error",
    overwrite: bool = False,
    max_rows: int | None = None,
    vocab_from: str | os.PathLike | None = None,
    block_bytes: int = 16 << 20,
    progress: Progress | None = None,
) -> DatasetMeta:
    """Prepare `raw` (format `dataset`: criteo, avazu, kdd12 or csv + `spec`) into the store `out`.

    Categorical ids: with `hash_buckets`, id = hash(value) % hash_buckets; otherwise a
    vocabulary of values seen at least `min_count` times (default 1), id 0 = OOV/rare. The
    store saves its encoding (`vocab.parquet`, `meta.encoding`); with `vocab_from` (such a
    store) `raw` is encoded with its ids instead, values it never kept -> 0, so every model
    trained on `vocab_from` accepts this store (`split="none"`: all rows in test, to score).
    """
    started = time.perf_counter()
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    fmt = resolve_format(dataset, raw, spec)
    _check_options(fmt, profile, min_count, hash_buckets, split, seed, on_bad_row, max_rows)
    seed = (DEFAULT_SEED if split == "stratified" else None) if seed is None else int(seed)
    raw = check_readable(raw)
    profile = check_readable(profile, "profile file") if profile is not None else None
    base, encoding = None, None
    if vocab_from is not None:
        fields = fmt.cat_names(profile is not None and fmt.join is not None)
        base, encoding = _encoding_from(vocab_from, fmt, dataset, fields, raw, out, min_count, hash_buckets)
    for path, what in ((raw, "raw file"), (profile, "profile file"), (spec, "feature spec"), (vocab_from, "--vocab-from store")):  # replacing --out deletes what is inside
        if path is not None:
            check_apart(path, out, what)
    with staged_store(out, overwrite) as tmp:
        work = tmp / "_work"
        work.mkdir()
        encoder = Encoder(fmt, joined=profile is not None)
        bad = BadRows(on_bad_row)
        side = _load_side(encoder, profile, bad, block_bytes) if profile is not None else None
        spool = _Spool(work, len(fmt.dense), len(encoder.cat_names))
        try:
            with RawReader(raw, fmt, block_bytes) as reader:
                _pass1(reader, encoder, spool, bad, max_rows, progress)
                sha = reader.digest()
        finally:
            spool.close()
        if spool.rows == 0:
            hint = NO_LABEL_HINT if bad.examples and all(_one_field_short(e) for e in bad.examples) else ""
            raise DataError(f"{raw}: no valid rows ({bad.count} bad rows skipped){hint}")
        unseen = None
        if encoding is None:
            remaps, sizes = encoder.hashed(hash_buckets) if hash_buckets else encoder.vocabulary(min_count or 1)
            encoding = {"kind": "hash", "buckets": hash_buckets} if hash_buckets else {"kind": "vocabulary", "file": _vocab.VOCAB_FILE, "min_count": min_count or 1}
            if not hash_buckets:
                with naming(tmp / _vocab.VOCAB_FILE):  # polars's error names no file
                    encoder.save_vocabulary(tmp / _vocab.VOCAB_FILE, remaps)
        elif encoding["kind"] == "hash":
            remaps, sizes = encoder.hashed(encoding["buckets"])
        else:
            vocab_file = Path(vocab_from) / encoding["file"]
            remaps, sizes, unseen = encoder.saved_vocabulary(vocab_file, base.vocab_sizes)
            shutil.copyfile(vocab_file, tmp / _vocab.VOCAB_FILE)  # the new store can pass its ids on in turn
            encoding = {**encoding, "file": _vocab.VOCAB_FILE}
        encoding["dense_transform"] = fmt.dense_transform
        labels = spool.labels()
        split_of = _splits.assign(labels, split, seed)
        rows, rate = _pass2(spool, labels, remaps, split_of, tmp, progress)
        shutil.rmtree(work)
        elapsed = time.perf_counter() - started
        source = {
            "path": str(raw.resolve()),
            "size": raw.stat().st_size,
            "sha256": sha,
            "dataset": dataset,
            "options": {"min_count": min_count or (None if hash_buckets else 1), "hash_buckets": hash_buckets, "split": split, "seed": seed, "on_bad_row": on_bad_row, "max_rows": max_rows, "spec": str(Path(spec).resolve()) if spec else None},
        }
        if side is not None:
            source["profile"] = side
        if base is not None:
            source["options"].update(min_count=base.source.get("options", {}).get("min_count"), hash_buckets=encoding.get("buckets"))
            source["vocab_from"] = {"store": str(Path(vocab_from).resolve()), "sha256": base.source.get("sha256"), "unseen_rows": unseen}
        meta = DatasetMeta(
            name=fmt.name,
            dense_names=list(fmt.dense),
            cat_names=encoder.cat_names,
            vocab_sizes=sizes,
            rows=rows,
            positive_rate=rate,
            source=source,
            bad_rows_skipped=bad.count,
            bad_row_examples=bad.examples,
            prepare_seconds=round(elapsed, 3),
            rows_per_second=round(spool.rows / elapsed, 1),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            versions={"polars": pl.__version__, "pyarrow": pa.__version__},
            encoding=encoding,
        )
        finish_store(tmp, out, meta, ("test",) if split == "none" else SPLITS)
    return meta
