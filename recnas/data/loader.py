"""Mini-batch loaders: vectorised gathers from memory-mapped (or device-resident) arrays.

No per-row Python work: a batch is one fancy-index per column. The loader's position
(epoch, batch index) plus its seed fully determine the order, so training can resume
exactly where it stopped.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass

import numpy as np
import torch

from recnas.data.store import SplitArrays


@dataclass
class Batch:
    """One mini-batch of a split, as tensors on the loader's device."""

    dense: torch.Tensor  # float32 [B, n_dense]
    sparse: torch.Tensor  # int64 [B, n_sparse]
    label: torch.Tensor  # float32 [B]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def to(self, device) -> "Batch":
        """The batch on `device` (copies start without waiting for the host)."""
        return Batch(self.dense.to(device, non_blocking=True), self.sparse.to(device, non_blocking=True), self.label.to(device, non_blocking=True))


def batch_count(rows: int, batch_size: int, drop_last: bool = False, world_size: int = 1) -> int:
    """Batches in one pass over `rows` rows: a `BatchLoader`'s length, known without building one."""
    if world_size > 1:  # whole global batches only, so every rank runs the same steps
        return rows // (batch_size * world_size)
    return rows // batch_size if drop_last else -(-rows // batch_size)


class BatchLoader:
    """Iterates over one split in batches; deterministic given (seed, epoch).

    `resident=True` copies the whole split to `device` once (use when it fits: on a GPU this
    removes host-to-device copies from the step entirely).
    """

    def __init__(
        self,
        arrays: SplitArrays,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        resident: bool = False,
        drop_last: bool = False,
        max_rows: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:  # a float one failed only at the first batch
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not all(hasattr(arrays, a) for a in ("dense", "sparse", "label")):
            hint = " (a store's split is store.split(name))" if hasattr(arrays, "meta") else ""
            raise TypeError(f"BatchLoader needs a split's SplitArrays, got {type(arrays).__name__}{hint}")
        self.arrays = arrays
        self.n = len(arrays) if max_rows is None else min(len(arrays), max_rows)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.position = 0  # batches already served in the current epoch
        self._resident = None
        if resident:
            self._resident = tuple(_resident_copy(a[: self.n], self.device) for a in (arrays.dense, arrays.sparse, arrays.label))

    # -- order -------------------------------------------------------------------------
    def _order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return np.arange(self.n)

    def __len__(self) -> int:
        return batch_count(self.n, self.batch_size, self.drop_last, self.world_size)

    def _batch_index(self, order: np.ndarray, k: int) -> np.ndarray:
        """Rank r reads the r-th slice of global batch k: W ranks with batch B see exactly the
        rows one process with batch W*B would, so DDP reproduces single-process training."""
        lo = (k * self.world_size + self.rank) * self.batch_size
        return order[lo : lo + self.batch_size]

    def state_dict(self) -> dict:
        """Where the loader is (epoch, batches served in it) and its seed: with them
        `load_state_dict` makes a loader serve the very batches this one serves next."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Go to the position `state_dict` recorded."""
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])

    # -- batches -----------------------------------------------------------------------
    def _gather(self, idx) -> Batch:
        if self._resident is not None:  # idx is already on the device (see __iter__)
            d, s, y = self._resident
            return Batch(d[idx], s[idx].long(), y[idx])
        if self.shuffle:
            idx = np.sort(idx)  # sequential-ish access on the memory map; order within a batch is irrelevant
        a = self.arrays
        batch = Batch(
            torch.from_numpy(np.asarray(a.dense[idx], dtype=np.float32)),
            torch.from_numpy(np.asarray(a.sparse[idx]).astype(np.int64)),
            torch.from_numpy(np.asarray(a.label[idx], dtype=np.float32)),
        )
        return batch.to(self.device) if self.device.type != "cpu" else batch

    def __iter__(self):
        """Serve the rest of the current epoch, then advance to the next one."""
        order = self._order(self.epoch)
        if self._resident is not None:
            # one copy of the epoch's order to the device: a per-batch copy of the indices
            # from pageable host memory would block the host on every step
            order = torch.from_numpy(order).to(self.device)
        nb = len(self)
        while self.position < nb:
            idx = self._batch_index(order, self.position)
            self.position += 1
            yield self._gather(idx)
        self.epoch += 1
        self.position = 0


def _resident_copy(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """One copy of a (read-only, memory-mapped) split in device memory. The numpy view is only
    read, to be copied, so torch's warning about non-writable arrays does not apply. On the CPU
    a read-only array (a store's memory map) is served as it is: the copy was a second one of
    the split in host memory (a whole train split per Trainer, every candidate's fine-tune
    included), with the same values; a writable one is still copied, so that a later change to
    it reaches no loader."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        view = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return view if not array.flags.writeable else view.clone()
    return view.to(device)
