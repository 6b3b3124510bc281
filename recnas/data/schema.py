"""The `meta.json` that describes a prepared dataset store.

Every consumer (loaders, models, search) reads the schema from here, so the store is
self-describing: no model needs to know which raw format the data came from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recnas.configs import explain, read_text, require_type, write_text_atomic
from recnas.errors import DataError

SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
VOCAB_MAX = 2**31  # ids 0..size-1 in int32


class DatasetMeta(BaseModel):
    """Schema and statistics of a prepared store (written last, so its presence means complete)."""

    model_config = ConfigDict(extra="allow")

    name: str
    dense_names: list[str]
    cat_names: list[str]
    # ids are stored as int32 (store.COLUMNS): a size past 2**31 is no store's, and one past int64 (an
    # edited meta.json) was an "Overflow when unpacking long long" traceback when a model was built
    vocab_sizes: list[Annotated[int, Field(gt=0, le=VOCAB_MAX)]] = Field(description="table size per categorical field (ids are 0..size-1)")
    rows: dict[str, int] = Field(description="row count per split")
    positive_rate: dict[str, float] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict, description="raw file, checksum, options")
    bad_rows_skipped: int = 0
    encoding: dict[str, Any] | None = Field(
        default=None, description="how values became ids, to encode other files alike (recnas.data.vocab); None: not saved"
    )
    bayes: dict[str, float] | None = Field(
        default=None, description="synthetic data only: Bayes-optimal log loss / AUC per split"
    )

    @property
    def n_dense(self) -> int:
        """Dense (numeric) features per row."""
        return len(self.dense_names)

    @property
    def n_sparse(self) -> int:
        """Categorical fields per row."""
        return len(self.cat_names)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `directory/meta.json` (atomically); returns its path."""
        path = Path(directory) / META_FILE
        write_text_atomic(path, json.dumps(self.model_dump(), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "DatasetMeta":
        """The meta of the store at `directory`; a folder without a readable, consistent
        meta.json is a DataError."""
        path = Path(directory) / META_FILE
        if not path.is_file():
            raise DataError(f"{directory}: not a prepared recnas dataset (no {META_FILE}); run `recnas data prepare` or `recnas data synth` first")
        text = read_text(path, "dataset metadata file", DataError)
        try:
            meta = cls.model_validate_json(text)
        except ValidationError as exc:
            raise DataError(f"{path}: unreadable dataset metadata: {explain(cls, exc)}") from None
        # what every consumer indexes by: a mismatch would surface later as a wrong model or a skipped row check
        if len(meta.vocab_sizes) != len(meta.cat_names):
            raise DataError(f"{path}: corrupt dataset metadata: {len(meta.cat_names)} cat_names but {len(meta.vocab_sizes)} vocab_sizes")
        if sorted(meta.rows) != sorted(SPLITS):
            raise DataError(f"{path}: corrupt dataset metadata: rows must count each split ({', '.join(SPLITS)}), got {', '.join(meta.rows) or 'none'}")
        return meta


def check_meta(meta: Any, what: str) -> DatasetMeta:
    """`meta` if it is a DatasetMeta; a TypeError naming `what` otherwise. A store in its place
    is the likely slip (models take the store's `.meta`): the message says so."""
    hint = "pass the store's .meta" if isinstance(getattr(meta, "meta", None), DatasetMeta) else ""
    if isinstance(meta, (str, os.PathLike)):
        hint = "open the store with recnas.data.CTRStore(path) and pass its .meta"
    return require_type(meta, DatasetMeta, what, hint)
