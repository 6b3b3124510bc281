"""Built-in synthetic CTR benchmark: a Criteo-shaped store with a known Bayes-optimal log loss.

Rows come from the planted click model in `recnas.data.planted`. Generation streams in
chunks (bounded memory) from one seeded random stream per `BLOCK` rows, so the arrays depend
only on (seed, config, rows), never on `chunk_rows`. Because the true p of every row is
known, meta.json `bayes` records the best log loss / AUC any model can reach on each split.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from recnas.configs import SEED_MAX
from recnas.data.planted import PlantedModel, SynthConfig, planted_model
from recnas.data.schema import SPLITS, DatasetMeta
from recnas.data.store import COLUMNS, STORE, NpyAppender, check_apart, finish_store, staged_store
from recnas.errors import ConfigError, DataError
from recnas.staging import check_parent, naming, temp_sibling

GENERATOR = "recnas.data.synthetic"
VERSION = 1
BLOCK = 8192  # rows per independent random stream: the unit of reproducibility
DEFAULT_CHUNK_ROWS = 200_000  # rows held in memory at once
MIN_ROWS = 100
MAX_ROWS = 500_000_000


def generate(
    out: str | os.PathLike,
    rows: int = 200_000,
    seed: int = 0,
    raw_out: str | os.PathLike | None = None,
    overwrite: bool = False,
    n_dense: int = 13,
    n_sparse: int = 26,
    *,
    max_vocab: int = 2000,
    positive_rate: float = 0.25,
    signal: float = 1.0,
    name: str = "synthetic",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> DatasetMeta:
    """Write a complete store at `out` (and optionally the same rows as a raw Criteo `train.txt`).

    Splits are a seeded random 8:1:1 partition (exact counts). Returns the saved meta.
    """
    rows, seed = _check_int("rows", rows, MIN_ROWS, MAX_ROWS), _check_int("seed", seed, 0, SEED_MAX)  # numpy splits a larger seed into 32-bit words: seed (0xB10C << 32) | s drew seed s's block streams
    chunk_rows = _check_int("chunk_rows", chunk_rows, 1, 10**9)
    config = SynthConfig(n_dense=n_dense, n_sparse=n_sparse, max_vocab=max_vocab, positive_rate=positive_rate, signal=signal).validate()
    n_dense, n_sparse = config.n_dense, config.n_sparse  # plain ints from here on
    raw_path = Path(raw_out) if raw_out is not None else None
    if raw_path is not None:  # the store swap would delete a raw file inside it, and vice versa
        check_apart(raw_path, out, "--raw-out")
        check_parent(raw_path, "--raw-out", DataError)
        STORE.check_outside(raw_path, "--raw-out")  # another store
        if raw_path.is_dir():
            raise DataError(f"raw output {raw_path} is a directory; give the path of the train.txt file to write")
        check_apart(out, raw_path, "--out", "--raw-out")
        if raw_path.exists() and not overwrite:
            raise DataError(f"{raw_path} already exists; pass --overwrite to replace it")
    model = planted_model(config, seed)
    assign = split_assignment(rows, seed)
    chunk_rows = max(BLOCK, chunk_rows // BLOCK * BLOCK)

    raw_tmp = raw_fh = None
    widths = {"dense": n_dense, "sparse": n_sparse, "label": None}
    writers: dict[tuple[str, str], NpyAppender] = {}
    stats = _BayesStats()
    try:
        with staged_store(out, overwrite) as tmp:
            for s in SPLITS:
                for col, dtype in COLUMNS.items():
                    writers[s, col] = NpyAppender(tmp / s / f"{col}.npy", dtype, widths[col])
            if raw_path is not None:
                raw_path.parent.mkdir(parents=True, exist_ok=True)
                raw_tmp = temp_sibling(raw_path)
                # `recnas data prepare` reads a .gz name as gzip: write what the name promises
                raw_fh = gzip.open(raw_tmp, "wb") if raw_path.suffix == ".gz" else open(raw_tmp, "wb")
                hex_tables = _hex_tables(model.vocab_sizes)
            for lo in range(0, rows, chunk_rows):
                n = min(chunk_rows, rows - lo)
                counts, missing, sparse, label, p = _sample_rows(model, seed, lo, n)
                dense = model.dense_transform(counts)
                part = assign[lo : lo + n]
                for k, s in enumerate(SPLITS):
                    sel = part == k
                    writers[s, "dense"].append(dense[sel])
                    writers[s, "sparse"].append(sparse[sel])
                    writers[s, "label"].append(label[sel])
                    stats.add(s, p[sel], label[sel])
                if raw_fh is not None:
                    with naming(raw_path):  # polars's error names no file
                        _write_raw_chunk(raw_fh, label, counts, missing, sparse, hex_tables)
            for w in writers.values():
                w.close()
            if raw_fh is not None:
                with naming(raw_path):
                    raw_fh.close()
            meta = DatasetMeta(
                name=name,
                dense_names=[f"I{i + 1}" for i in range(n_dense)],
                cat_names=[f"C{i + 1}" for i in range(n_sparse)],
                vocab_sizes=list(model.vocab_sizes),
                rows={s: writers[s, "label"].rows for s in SPLITS},
                positive_rate={s: stats.positive_rate(s) for s in SPLITS},
                source={
                    "generator": GENERATOR,
                    "version": VERSION,
                    "seed": seed,
                    "rows": rows,
                    "config": config.to_dict(),
                    "split": "seeded random 8:1:1 (exact counts), rows keep generation order within a split",
                    "missing": "dense: missing -> 0 after log(max(x,0)+1); categorical: id 0 = missing",
                    "raw_file": str(raw_path) if raw_path is not None else None,
                    "planted": model.describe(),
                },
                bayes=stats.summary(),
            )
            finish_store(tmp, out, meta)
        if raw_tmp is not None:  # after the store: a failed store keeps the previous raw file too
            os.replace(raw_tmp, raw_path)
        return meta
    except BaseException:
        with contextlib.suppress(OSError):  # closing flushes: on a full disk that fails again, over the error being raised
            for w in writers.values():
                with contextlib.suppress(OSError):
                    w.close()
            if raw_fh is not None:
                with contextlib.suppress(OSError):
                    raw_fh.close()
                Path(raw_tmp).unlink(missing_ok=True)
        raise


def true_probability(dense: np.ndarray, sparse: np.ndarray, source: dict[str, Any] | DatasetMeta | PlantedModel) -> np.ndarray:
    """True click probability (float64) of stored rows; `source` is meta.json's `source`, the meta, or a model."""
    return model_from_source(source).probability(dense, sparse)


def model_from_source(source: dict[str, Any] | DatasetMeta | PlantedModel) -> PlantedModel:
    """Rebuild the planted model that generated a store, checking it matches the recorded one."""
    if isinstance(source, PlantedModel):
        return source
    if isinstance(source, DatasetMeta):
        source = source.source
    if source.get("generator") != GENERATOR:
        raise DataError(f"dataset was not made by the synthetic generator (source.generator={source.get('generator')!r})")
    if source.get("version") != VERSION:
        raise DataError(f"synthetic dataset version {source.get('version')} is not supported (this code writes version {VERSION}); regenerate it")
    try:
        model = planted_model(SynthConfig.from_dict(dict(source["config"])), int(source["seed"]))
        recorded = float(source["planted"]["bias"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"meta.json source: incomplete synthetic generator record ({exc!r})") from None
    if not math.isclose(model.bias, recorded, rel_tol=1e-9, abs_tol=1e-9):
        raise DataError(f"meta.json source: rebuilt click model has bias {model.bias} but the store recorded {recorded}; it was made by different code")
    return model


def split_assignment(rows: int, seed: int) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of each generated row: exact 8:1:1 counts, seeded."""
    n_val = n_test = rows // 10
    assign = np.zeros(rows, dtype=np.int8)
    perm = np.random.default_rng([seed, 0x5E11]).permutation(rows)
    assign[perm[:n_val]] = 1
    assign[perm[n_val : n_val + n_test]] = 2
    return assign


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ConfigError(f"synthetic data: {name} must be an integer in [{lo:,}, {hi:,}], got {value!r}")
    return int(value)


def _sample_rows(model: PlantedModel, seed: int, start: int, n: int):
    """Rows start..start+n; each BLOCK-aligned block has its own stream, so chunking is invisible."""
    assert start % BLOCK == 0
    parts = []
    for b in range(start // BLOCK, (start + n - 1) // BLOCK + 1):
        m = min(BLOCK, start + n - b * BLOCK)
        rng = np.random.default_rng([seed, 0xB10C, b])
        counts, missing, sparse = model.sample_counts(rng, m)
        parts.append((counts, missing, sparse, rng.random(m)))
    counts, missing, sparse, u = (np.concatenate(x) for x in zip(*parts))
    p = model.probability(model.dense_transform(counts), sparse)
    label = (u < p).astype(np.float32)
    return counts, missing, sparse, label, p


class _BayesStats:
    """Streaming Bayes-optimal metrics: sums for train, kept (p, y) for the small val/test splits."""

    def __init__(self):
        self.n = {s: 0 for s in SPLITS}
        self.pos = {s: 0.0 for s in SPLITS}
        self.loss = {s: 0.0 for s in SPLITS}
        self.entropy = {s: 0.0 for s in SPLITS}
        self.kept: dict[str, list] = {"val": [], "test": []}

    def add(self, split: str, p: np.ndarray, y: np.ndarray) -> None:
        pc = np.clip(p, 1e-15, 1 - 1e-15)
        self.n[split] += len(p)
        self.pos[split] += float(y.sum())
        self.loss[split] += float(-(y * np.log(pc) + (1 - y) * np.log1p(-pc)).sum())
        self.entropy[split] += float(-(pc * np.log(pc) + (1 - pc) * np.log1p(-pc)).sum())
        if split in self.kept:
            self.kept[split].append((p, y))

    def positive_rate(self, split: str) -> float:
        return self.pos[split] / max(self.n[split], 1)

    def summary(self) -> dict[str, float]:
        out = {}
        for s in SPLITS:
            if self.n[s]:
                out[f"{s}_logloss"] = self.loss[s] / self.n[s]
                out[f"{s}_expected_logloss"] = self.entropy[s] / self.n[s]
        for s, parts in self.kept.items():
            if not parts:
                continue
            p = np.concatenate([a for a, _ in parts])
            y = np.concatenate([b for _, b in parts])
            out[f"{s}_logloss"] = float(log_loss(y, p, labels=[0, 1]))
            if 0 < y.sum() < len(y):
                out[f"{s}_auc"] = float(roc_auc_score(y, p))
        return out


def _hex_tables(vocab_sizes: list[int]):
    """Per field, the 8-hex-digit raw string of every id (None for id 0 = missing).

    The map id -> hash is a per-field bijection of uint32, so distinct ids never collide.
    """
    import polars as pl

    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    tables = []
    for f, v in enumerate(vocab_sizes):
        x = np.arange(v, dtype=np.uint64)
        x = (x * 0x9E3779B1 + (f + 1) * 0x7F4A7C15) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x85EBCA6B) & 0xFFFFFFFF
        x ^= x >> 13
        nibbles = (x[:, None] >> np.arange(28, -1, -4, dtype=np.uint64)) & 0xF
        text = digits[nibbles].reshape(-1).tobytes().decode("ascii")
        strings = [text[i * 8 : i * 8 + 8] for i in range(v)]
        strings[0] = None
        tables.append(pl.Series(strings, dtype=pl.Utf8))
    return tables


def _write_raw_chunk(fh, label, counts, missing, sparse, hex_tables) -> None:
    """Append rows as Criteo `train.txt` lines: label, I1..I13 (empty if missing), C1..C26 (hex or empty)."""
    import polars as pl

    n_dense = counts.shape[1]
    cols = [pl.Series("label", label.astype(np.int8))]
    cols += [pl.Series(f"I{j + 1}", counts[:, j]) for j in range(n_dense)]
    cols += [pl.Series(f"_m{j + 1}", missing[:, j]) for j in range(n_dense)]
    cols += [t.gather(sparse[:, f]).alias(f"C{f + 1}") for f, t in enumerate(hex_tables)]
    df = pl.DataFrame(cols).with_columns(
        [pl.when(pl.col(f"_m{j + 1}")).then(None).otherwise(pl.col(f"I{j + 1}")).alias(f"I{j + 1}") for j in range(n_dense)]
    ).drop([f"_m{j + 1}" for j in range(n_dense)])
    df.write_csv(fh, separator="\t", include_header=False, null_value="", quote_style="never")
