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


def encoding_of(meta: DatasetMeta) -> dict | None:
    """The saved encoding of a store, or None. Hash stores written before `encoding` existed
    still say their bucket count in `source.options` (the hash is stable across versions)."""
    enc = getattr(meta, "encoding", None)
    if enc:
        return dict(enc)
    buckets = meta.source.get("options", {}).get("hash_buckets")
    return {"kind": "hash", "buckets": int(buckets)} if buckets else None


def remap_from(path: Path, name: str, strings: pl.Series, counts: np.ndarray) -> tuple[np.ndarray, int]:
    """Code -> id for one field of a new file (`strings` by code) from a saved vocabulary, and
    the number of rows whose value it does not hold (they get the OOV id 0)."""
    try:
        saved = pq.read_table(path, columns=["value", "id"], filters=[("field", "==", name)])
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: unreadable vocabulary file ({exc})") from None
    codes = pl.DataFrame({"value": strings[: len(counts)], "code": np.arange(len(counts), dtype=np.int64)})
    found = codes.join(pl.from_arrow(saved).with_columns(pl.col("value").cast(pl.String)), on="value", how="inner")
    remap = np.zeros(len(counts), np.int32)
    remap[found.get_column("code").to_numpy()] = found.get_column("id").to_numpy()
    return remap, int(counts[remap == 0].sum())
