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
    if value is None or isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
        return missing
    try:
        return fmt.format(value)
    except (TypeError, ValueError):  # text where `fmt` wants a number
        return missing


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
    """Log loss and AUC of `model` over one full pass of a split (or of a loader's split), in
    batches of `batch_size` rows (default `eval_batch_size(device)`).

    A loader is rewound for the pass and left exactly where it was, so evaluating never
    disturbs a training run that owns it. `arch` is passed to supernet forwards.
    """
    labels, logits = predict(model, loader_or_split, arch, device, batch_size, max_rows, amp_dtype)
    return ctr_metrics(labels, logits)


def probabilities(logits) -> np.ndarray:
    """Click probabilities of logits (a stable sigmoid: a logit below -88 gives 0, not an overflow)."""
    from scipy.special import expit

    return expit(np.asarray(logits, np.float64))


def predict_proba(model: torch.nn.Module, loader_or_split: BatchLoader | SplitArrays, **kwargs) -> np.ndarray:
    """The model's click probability for every row of a split, in row order (`predict`'s keywords)."""
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
    """(labels, logits) of one full pass, in row order, as `evaluate` sees them."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    if isinstance(loader_or_split, BatchLoader):
        loader = loader_or_split
    elif isinstance(loader_or_split, SplitArrays):
        loader = BatchLoader(loader_or_split, batch_size or eval_batch_size(device), shuffle=False, device=device, max_rows=max_rows)
    else:
        raise TypeError(f"evaluate() needs a BatchLoader or SplitArrays, got {type(loader_or_split).__name__}")
    saved = loader.state_dict()
    loader.position = 0
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        with torch.inference_mode(), _autocast(device, amp_dtype):
            for batch in loader:
                out = model(batch.dense, batch.sparse) if arch is None else model(batch.dense, batch.sparse, arch)
                logits.append(out.float().reshape(-1))
                labels.append(batch.label)
    finally:
        loader.load_state_dict(saved)
        model.train(was_training)
    if not logits:
        return np.empty(0), np.empty(0)
    return torch.cat(labels).cpu().numpy(), torch.cat(logits).cpu().numpy()
