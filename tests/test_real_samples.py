"""Parse real dataset samples when they are present beside the project (skipped otherwise).

Files are found by name under `../shared/data/real/` (relative to the repository):
Criteo `train.txt`-like, Avazu `train.csv`-like (or a name containing "avazu"), KDD12
`training.txt`-like (plus an optional `userid_profile.txt`). Only the first rows are read,
so a full-size file is fine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recnas.data.prepare import prepare
from recnas.data.store import CTRStore

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
MAX_ROWS = 20_000


def _find(*patterns: str) -> list[Path]:
    if not REAL.is_dir():
        return []
    found = {p for pattern in patterns for p in REAL.rglob(pattern) if p.is_file()}
    return sorted(found)


SAMPLES = (
    [("criteo", p) for p in _find("*criteo*.txt*", "train.txt", "train.txt.gz", "*dac*sample*.txt*")]
    + [("avazu", p) for p in _find("*avazu*", "train.csv", "train.csv.gz", "train", "train.gz") if "profile" not in p.name]
    + [("kdd12", p) for p in _find("training.txt", "training.txt.gz", "*kdd*12*.txt*", "*kdd12*") if "profile" not in p.name]
)


@pytest.mark.skipif(not SAMPLES, reason=f"no real samples under {REAL}")
@pytest.mark.parametrize("dataset, path", SAMPLES, ids=[f"{d}:{p.name}" for d, p in SAMPLES] or None)
def test_real_sample_parses(tmp_path, dataset, path):
    profile = next(iter(_find("userid_profile.txt", "userid_profile.txt.gz")), None) if dataset == "kdd12" else None
    meta = prepare(dataset, path, tmp_path / "store", profile=profile, max_rows=MAX_ROWS, on_bad_row="skip")
    total = sum(meta.rows.values())
    assert total > 0 and meta.bad_rows_skipped <= 0.01 * (total + meta.bad_rows_skipped), meta.bad_row_examples
    expected = {"criteo": (13, 26), "avazu": (0, 23), "kdd12": (0, 12 if profile else 10)}[dataset]
    assert (meta.n_dense, meta.n_sparse) == expected
    train = CTRStore(tmp_path / "store").split("train")
    assert np.isfinite(train.dense).all() and set(np.unique(train.label)) <= {0.0, 1.0}
    assert (train.sparse < np.array(meta.vocab_sizes)).all() and (train.sparse >= 0).all()
    assert 0.0 < meta.positive_rate["train"] < 0.6
