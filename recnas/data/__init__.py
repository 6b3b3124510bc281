"""CTR data: raw readers, streaming preprocessing, on-disk store, loaders, synthetic benchmark."""

from recnas.data.schema import DatasetMeta, SPLITS
from recnas.data.store import CTRStore, SplitArrays, write_store
from recnas.data.loader import Batch, BatchLoader

__all__ = ["DatasetMeta", "SPLITS", "CTRStore", "SplitArrays", "write_store", "Batch", "BatchLoader"]
