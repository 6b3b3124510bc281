"""Checkpoint files: atomic writes, `weights_only` reads, and clear errors on bad files.

A checkpoint only holds tensors and plain containers (dict/list/str/int/float/bool/None),
so it is read with ``torch.load(weights_only=True)``: loading a file never runs code.
Writes go through `configs.atomic_write` (a temp file in the same directory, fsynced, then
`os.replace`d over the target), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recnas.configs import atomic_write
from recnas.errors import CheckpointError, ConfigError, exception_chain

FORMAT = "recnas-checkpoint"
VERSION = 1
# The layout of the models' weights a checkpoint holds, written since 2026-12-07 (files before
# record none: layout 1, of any earlier recnas). Raise it with every change to the weights a
# model of a given spec has or to what they mean, so that a file is refused by what it says it
# is: an older recnas's by the newer code that changed it, a newer one's by older code ("missing
# keys", or worse, other subnets drawn from a supernet, was all either could tell).
LAYOUT = 2


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Atomically write `payload` (plus format tag) to `path`; returns the path. The payload is
    a dict with what `load_checkpoint` requires: `model` (a state dict) and `model_spec` (a
    dict, the one `recnas.train.model_factory`'s specs give; with it `load_trained` rebuilds
    the model). A payload without them used to be written, and refused only when read back."""
    if not isinstance(payload, dict):
        raise TypeError(f"save_checkpoint's payload must be a dict, got {type(payload).__name__}; e.g. {{'model': model.state_dict(), 'model_spec': spec}}")
    missing = [key for key in ("model", "model_spec") if key not in payload]
    if missing:
        raise ValueError(f"save_checkpoint's payload lacks {' and '.join(map(repr, missing))}, without which load_checkpoint refuses the file; e.g. {{'model': model.state_dict(), 'model_spec': spec}}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        torch_save({"format": FORMAT, "version": VERSION, "layout": LAYOUT, **payload}, fh)
    return path


def torch_save(obj, f) -> None:
    """`torch.save`, but a Ctrl-C or a failed write in the middle of it stays what it was: a
    KeyboardInterrupt ("interrupted"), or the OSError (a full disk, a file size limit: ENOSPC,
    EFBIG), which the CLI prints as one line naming the file. torch's zip writer, closing on the
    way out, raised "RuntimeError: ... unexpected pos" over either, a traceback instead."""
    try:
        torch.save(obj, f)
    except RuntimeError as exc:
        chain = list(exception_chain(exc))
        if any(isinstance(e, KeyboardInterrupt) for e in chain):  # raised while handling one
            raise KeyboardInterrupt from None
        failed = next((e for e in chain if isinstance(e, OSError)), None)
        if failed is not None:
            raise failed.with_traceback(None) from None
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Read a checkpoint; a missing, truncated, foreign or corrupt file raises CheckpointError.
    `mmap=True` maps the file's tensors instead of reading them into memory (torch.load's
    `mmap`): for a caller that copies them into a model and lets the payload go, so that they
    take no memory of their own beside the model's."""
    path = Path(path)
    if path.is_dir():  # a run folder: "not found" sent the user looking for a folder that is there
        held = [name for name in ("model.pt", "checkpoint.pt") if (path / name).is_file()]
        hint = f"give a file of it, e.g. {path / held[0]}" if held else "give the model.pt or checkpoint.pt of a training run"
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file; {hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its end record is missing when cut short
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint (not a complete PyTorch zip archive)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # zip/pickle/unpickler errors all mean "not a usable checkpoint"
        # torch's text for a refused pickle goes on to suggest weights_only=False (running the
        # file's code): keep only its first sentence
        reason = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({reason[:200]})") from None
    if isinstance(payload, dict) and {"state_dict", "widths", "config"} <= set(payload) and "format" not in payload:
        # `recnas embed search`'s model.pt: "not a recnas checkpoint" left the user guessing
        raise CheckpointError(
            f"{path}: the model of an embedding size search (`recnas embed search`), not a training run's checkpoint; "
            "its test metrics are in result.json beside it, and its widths go into an architecture with `recnas embed apply`"
        )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a recnas checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('version')}, this recnas reads {VERSION}")
    layout = layout_of(payload)
    if not isinstance(layout, int) or isinstance(layout, bool) or layout < 1:
        raise CheckpointError(f"{path}: checkpoint's weights layout {layout!r} is not a positive integer (an edited file?)")
    if layout > LAYOUT:
        raise CheckpointError(f"{path}: written by a newer recnas (weights layout {layout}; this recnas reads up to {LAYOUT}): upgrade recnas to read it")
    for key in ("model", "model_spec"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return payload


def layout_of(payload: dict) -> int:
    """The weights layout a checkpoint `payload` (of `load_checkpoint`) was written with (1: it
    records none, a recnas before 2026-12-07 wrote it)."""
    return payload.get("layout", 1)


class OlderRecnasCheckpoint(CheckpointError):
    """A checkpoint this recnas cannot take on because an older one wrote it. The `problem` is
    kept apart from the way on (`way_on`, the class's default unless given), so that a caller
    that knows more (the search job: which run folder's model to train again; a resume:
    --overwrite) can say it instead."""

    way_on = "train the model again with this recnas"

    def __init__(self, problem: str, way_on: str | None = None):
        self.problem = problem
        super().__init__(f"{problem}; {way_on or self.way_on}")


class OtherLayoutCheckpoint(OlderRecnasCheckpoint):
    """Weights that do not fit the very model the checkpoint's own model_spec describes, as this
    recnas builds it: the file was written by an older recnas, whose models had other weights
    (the supernets and subnets of its first days: no logit heads, a norm per block), or was
    edited. "does not match the model" alone left the user looking for a change they had not
    made."""


def load_model_state(model: torch.nn.Module, state: dict, path: str | os.PathLike, own_spec: bool = False) -> None:
    """`load_state_dict(strict=True)`, with missing/extra keys and shape clashes as CheckpointError;
    `own_spec`: `model` is built from the checkpoint's own model_spec (or one checked equal to
    it), so a clash means another recnas laid that model out (OtherLayoutCheckpoint)."""
    check_model_state(model, state, path, own_spec)
    model.load_state_dict(state)


def check_model_state(model: torch.nn.Module, state: dict, path: str | os.PathLike, own_spec: bool = False) -> None:
    """`load_model_state`'s checks alone, loading nothing: `model` may be built on the meta
    device (shapes, no memory), to check a file's weights before the real model is allocated."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: checkpoint's weights are not a state dict of named tensors (got {type(state).__name__})")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if extra:
        problems.append(f"unexpected keys {_few(extra)}")
    if shapes:
        problems.append(f"shape mismatch {_few(shapes)}")
    if problems and own_spec:
        raise OtherLayoutCheckpoint(
            f"{path}: the checkpoint's weights do not fit the model its model_spec describes ({'; '.join(problems)}): "
            "it was written by an older recnas, whose models had other weights, or edited"
        )
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match the model ({'; '.join(problems)})")


class OtherModelCheckpoint(CheckpointError):
    """A checkpoint of another model than the one asked to resume. Its own class so that the
    search job can say what to do about a run folder whose model was built differently."""


def check_spec(saved: dict, current: dict | None, path: str | os.PathLike) -> None:
    """Refuse to resume a checkpoint of a different model (kind, space, arch, data...)."""
    if current is None:
        return
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if diff == ["sampler"] and saved.get("kind") == "supernet":
        # the same supernet, drawn from by another path sampler (a resume without the --sampler it
        # was trained with): "a different model" sent the user looking for a change they had not made
        raise OtherModelCheckpoint(
            f"{path}: the supernet was trained with the {saved.get('sampler')!r} path sampler, this run would resume it with "
            f"{current.get('sampler')!r} (model_spec differs in: sampler); resume it with the sampler it was trained with (--sampler {saved.get('sampler')}), or start afresh (--overwrite)"
        )
    if diff:
        raise OtherModelCheckpoint(f"{path}: checkpoint is for a different model (model_spec differs in: {', '.join(diff)})")


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# -- RNG state as plain containers -----------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every RNG the training step may touch, in a form `weights_only` loading accepts."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python `random` (model init and dropout) with
    `seed`, an integer in 0..2**32 - 1 as every recnas seed (numpy takes no larger one)."""
    from recnas.configs import SEED_MAX

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed must be an integer in 0..{SEED_MAX}, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
