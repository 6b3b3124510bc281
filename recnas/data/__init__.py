"""CTR data: raw readers, streaming preprocessing, on-disk store, loaders, synthetic benchmark."""

from recnas.data.schema import DatasetMeta, SPLITS
from recnas.data.store import CTRStore, SplitArrays, write_store

__all__ = ["DatasetMeta", "SPLITS", "CTRStore", "SplitArrays", "write_store", "Batch", "BatchLoader"]


def __getattr__(name: str):
    """The loaders on first use: they import torch (about a second), which `recnas data prepare`
    and every other user of the readers and the store alone need not wait for."""
    if name in ("Batch", "BatchLoader"):
        from recnas.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
