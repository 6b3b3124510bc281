"""The saved encoding of a store, so other raw files can be encoded with the same ids.

A store prepared with a vocabulary keeps it in `vocab.parquet` (columns field, value, id: each
categorical field's kept values in id order, one row group or more per field; Parquet keeps
any string a value can hold). `meta.json`'s `encoding` says which kind the store used::

    {"kind": "vocabulary", "file": "vocab.parquet", "min_count": 1, "dense_transform": "log1p"}
    {"kind": "hash", "buckets": 1000000, "dense_transform": "log1p"}

`prepare(..., vocab_from=STORE)` reads it back field by field (memory: one field's values at a
time) and maps the new file's categories to STORE's ids, 0 (OOV) for values STORE never kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recnas.data.schema import DatasetMeta
from recnas.errors import DataError

VOCAB_FILE = "vocab.parquet"
SCHEMA = pa.schema([("field", pa.string()), ("value", pa.large_string()), ("id", pa.int32())])
ROW_GROUP = 1 << 20


def save(path: str | os.PathLike, names: list[str], values: Callable[[str], pl.Series], remaps: list[np.ndarray]) -> None:
    """Write each field's kept values (code -> id `remaps`, id 0 = not kept) in id order.
    `values(name)` gives a field's strings by code (at least as many as its remap); one field
    is in memory at a time."""
    with pq.ParquetWriter(path, SCHEMA) as writer:
        for name, remap in zip(names, remaps):
            strings = values(name)
            kept = np.flatnonzero(remap)
            kept = kept[np.argsort(remap[kept], kind="stable")]
            table = pa.table(
                {
                    "field": pa.DictionaryArray.from_arrays(np.zeros(len(kept), np.int32), pa.array([name])).cast(pa.string()),  # no Python objects
                    "value": strings.gather(kept).to_arrow().cast(pa.large_string()),
                    "id": pa.array(remap[kept].astype(np.int32)),
                },
                schema=SCHEMA,
            )
            writer.write_table(table, row_group_size=ROW_GROUP)


def encoding_of(meta: DatasetMeta, where: str | os.PathLike = "the store") -> dict | None:
    """The saved encoding of a store (`where`, for messages), or None. Hash stores written
    before `encoding` existed still say their bucket count in `source.options` (the hash is
    stable across versions). An encoding that is not one of the two kinds above is refused:
    an unknown kind was read as a vocabulary, and a missing `file` or `buckets` ended in a
    KeyError traceback."""
    enc = getattr(meta, "encoding", None)
    if not enc:
        buckets = meta.source.get("options", {}).get("hash_buckets")
        if not buckets:
            return None
        enc = {"kind": "hash", "buckets": buckets}
    enc = dict(enc)
    bad = f"{Path(where) / 'meta.json'}: its encoding {enc} is not one recnas writes"
    if enc.get("kind") == "hash":
        buckets = enc.get("buckets")
        if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
            raise DataError(f"{bad}: buckets must be a whole number >= 1")
    elif enc.get("kind") == "vocabulary":
        file = enc.get("file")
        if not isinstance(file, str) or not file or Path(file).name != file or file in (".", ".."):
            raise DataError(f"{bad}: file must name the vocabulary file inside the store (e.g. {VOCAB_FILE})")
    else:
        raise DataError(f"{bad}: kind must be vocabulary or hash")
    return enc


def remap_from(path: Path, name: str, strings: pl.Series, counts: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Code -> id for one field of a new file (`strings` by code) from a saved vocabulary whose
    field `name` has `size` ids (meta.json's vocab_sizes), and the number of rows whose value it
    does not hold (they get the OOV id 0). The field's saved values must be ids 1..size-1, each
    once: a vocabulary that lost a field's rows used to map every value to 0 silently, and one
    with ids out of range wrote them into the new store."""
    try:
        names = pq.read_schema(path).names
        lacking = [c for c in ("field", "value", "id") if c not in names]
        if lacking:
            raise DataError(f"{path}: unreadable vocabulary file (no column {', '.join(lacking)}; it has {', '.join(names)})")
        saved = pq.read_table(path, columns=["value", "id"], filters=[("field", "==", name)])
        saved = pl.from_arrow(saved).with_columns(pl.col("value").cast(pl.String), pl.col("id").cast(pl.Int64))
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise DataError(f"{path}: unreadable vocabulary file ({' '.join(str(exc).split())})") from None
    ids = np.sort(saved.get_column("id").to_numpy())
    if len(ids) != size - 1 or not np.array_equal(ids, np.arange(1, size)) or saved.get_column("value").n_unique() != len(ids):
        raise DataError(
            f"{path}: field {name} holds {len(ids):,} values, not ids 1..{size - 1} each once as meta.json's vocab_sizes ({size}) says; "
            "the store is inconsistent: prepare it again from its raw file"
        )
    codes = pl.DataFrame({"value": strings[: len(counts)], "code": np.arange(len(counts), dtype=np.int64)})
    found = codes.join(saved, on="value", how="inner")
    remap = np.zeros(len(counts), np.int32)
    remap[found.get_column("code").to_numpy()] = found.get_column("id").to_numpy()
    return remap, int(counts[remap == 0].sum())
