"""CTR metrics (log loss, AUC) and the one evaluation pass every caller shares.

The metrics are computed by scikit-learn on the host, after one device-to-host copy of all
logits: the per-batch loop never synchronises with the accelerator.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recnas.data.loader import BatchLoader
from recnas.data.store import SplitArrays


def ctr_metrics(labels: np.ndarray, logits: np.ndarray) -> dict:
    """{"logloss", "auc", "rows"} from labels in {0,1} and pre-sigmoid logits.

    AUC is NaN when only one class is present (it is undefined there); both are NaN for an
    empty set and for NaN logits (a diverged model: NaN, not a scikit-learn traceback).
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    if y.shape != z.shape:
        raise ValueError(f"labels ({y.shape[0]}) and logits ({z.shape[0]}) differ in length")
    if y.size == 0 or np.isnan(z).any():
        return {"logloss": math.nan, "auc": math.nan, "rows": int(y.size)}
    with np.errstate(over="ignore"):  # a logit below -709 gives 0 as it should; numpy's overflow warning was printed among the training lines
        p = 1.0 / (1.0 + np.exp(-z))
    ll = float(log_loss(y, p, labels=[0, 1]))  # sklearn clips p to its dtype's eps: stays finite
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else math.nan
    return {"logloss": ll, "auc": auc, "rows": int(y.size)}


def format_metric(value, fmt: str = "{:.5f}", missing: str = "n/a") -> str:
    """A metric as `fmt` (5 places), or `missing` when it is undefined: AUC on a split of one
    class is NaN (null once written to JSON), and a stored row written by another tool or edited
    may hold text where a number belongs. Every command and table prints metrics this way."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    try:
        return fmt.format(value)
    except (TypeError, ValueError):  # text where `fmt` wants a number
        return missing


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and its noun, singular for one: reports read "1 candidates evaluated" and
    "1 generations" for a space or search of one."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def json_safe(obj):
    """NaN/inf -> None, recursively, so result files are strict JSON (AUC is NaN on one class)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


# rows per evaluation batch on the CPU: at 4,096 rows AutoInt's activations (160 MB a tensor) are
# above glibc's 32 MiB mmap threshold, so every one was mapped afresh and page-faulted on every
# batch, half of its evaluation time (docs/benchmarks.md); a row's logit does not depend on the batch
CPU_EVAL_BATCH = 1024


def eval_batch_size(device: str | torch.device, train_batch: int | None = None) -> int:
    """The default evaluation batch: 4 x the training batch (4,096 without one), at most
    `CPU_EVAL_BATCH` rows on the CPU."""
    rows = 4096 if train_batch is None else 4 * train_batch
    return min(rows, CPU_EVAL_BATCH) if torch.device(device).type == "cpu" else rows


def evaluate(
    model: torch.nn.Module,
    loader_or_split: BatchLoader | SplitArrays,
    arch=None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    max_rows: int | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict:
    """{"logloss", "auc", "rows"} of `model` over one full pass of a split (its first
    `max_rows` rows), in batches of `batch_size` rows (default `eval_batch_size(device)`), or
    over a loader's pass (its own batches and rows).

    A loader is rewound for the pass and left exactly where it was, so evaluating never
    disturbs a training run that owns it. `arch` chooses a supernet's path; `device` and the
    rest as in `predict`.
    """
    labels, logits = predict(model, loader_or_split, arch, device, batch_size, max_rows, amp_dtype)
    return ctr_metrics(labels, logits)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one: "cuda" (the current device) is "cuda:0" when that is current."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def probabilities(logits) -> np.ndarray:
    """Click probabilities of logits, in float64 (scipy's stable sigmoid: no overflow warning,
    however negative a logit)."""
    from scipy.special import expit

    return expit(np.asarray(logits, np.float64))


def predict_proba(model: torch.nn.Module, loader_or_split: BatchLoader | SplitArrays, **kwargs) -> np.ndarray:
    """The model's click probability for every row of a split, in row order (`predict`'s
    keywords: `arch` for a supernet, `device`, `batch_size`, `max_rows`, `amp_dtype`)."""
    return probabilities(predict(model, loader_or_split, **kwargs)[1])


def predict(
    model: torch.nn.Module,
    loader_or_split: BatchLoader | SplitArrays,
    arch=None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    max_rows: int | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, logits) of one full pass, as `evaluate` sees them: a split's rows in row
    order, a loader's as it serves them.

    The pass runs on `device` (default: where the model's weights are), which must be where
    the model's weights are, and so must a loader's device; a model is never moved. `arch`
    chooses a supernet's path (a supernet needs one, other recnas models take none);
    `batch_size` and `max_rows` apply to a split, a loader has its own (and its own order: a
    training loader's rows come shuffled, its last partial batch dropped). `amp_dtype` runs the
    pass under autocast to it."""
    from recnas.supernet.net import check_path_use

    check_path_use(model, arch is not None, "evaluate", "arch", "an Architecture of its space")
    held = next((p.device for p in model.parameters()), None)
    device = torch.device(device) if device is not None else held or torch.device("cpu")
    if held is not None and not same_device(held, device):
        raise ValueError(f"evaluate on {device}: the model's weights are on {held}; move it there first (model.to(device)), or leave device out")
    if isinstance(loader_or_split, BatchLoader):
        loader = loader_or_split
        if batch_size is not None or max_rows is not None:  # they used to be ignored without a word
            given = " and ".join(f"{k}={v}" for k, v in (("batch_size", batch_size), ("max_rows", max_rows)) if v is not None)
            raise ValueError(f"{given} applies to a split (SplitArrays); this loader has its own batch size ({loader.batch_size}) and rows ({loader.n:,})")
        if not same_device(loader.device, device):
            raise ValueError(f"evaluate on {device}: the loader yields batches on {loader.device}; build it with device={str(device)!r}")
    elif isinstance(loader_or_split, SplitArrays):
        loader = BatchLoader(loader_or_split, batch_size or eval_batch_size(device), shuffle=False, device=device, max_rows=max_rows)
    else:
        hint = " (a store's split is store.split(name))" if hasattr(loader_or_split, "split") and hasattr(loader_or_split, "meta") else ""
        raise TypeError(f"evaluate() needs a BatchLoader or SplitArrays, got {type(loader_or_split).__name__}{hint}")
    saved = loader.state_dict()
    loader.position = 0
    was_training = model.training
    model.eval()
    # one buffer for the whole pass, filled batch by batch: a list of per-batch tensors, each a
    # small allocation kept between the batches' freed activations, fragmented the heap so that
    # none of it was returned and the process grew by ~1.7 KB per row (3.2 GB to score a train
    # split of 1.6M rows); torch.cat then copied them all once more
    room = len(loader) * loader.batch_size
    logits = torch.empty(room, dtype=torch.float32, device=loader.device)
    labels = torch.empty(room, dtype=torch.float32, device=loader.device)
    rows = 0
    try:
        with torch.inference_mode(), _autocast(device, amp_dtype):
            for batch in loader:
                out = model(batch.dense, batch.sparse) if arch is None else model(batch.dense, batch.sparse, arch)
                out = out.float().reshape(-1)
                if len(out) != len(batch):
                    raise ValueError(f"the model gave {len(out)} logits for a batch of {len(batch)} rows; it must give one per row")
                logits[rows : rows + len(out)] = out
                labels[rows : rows + len(out)] = batch.label
                rows += len(out)
    finally:
        loader.load_state_dict(saved)
        model.train(was_training)
    if not rows:
        return np.empty(0), np.empty(0)
    return labels[:rows].cpu().numpy(), logits[:rows].cpu().numpy()
