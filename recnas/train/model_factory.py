"""Model specs: the JSON-able description that lets a checkpoint rebuild its own model.

A checkpoint stores weights plus a `model_spec`; `build_model(spec)` reconstructs the module
(supernet, subnet or baseline) so `recnas evaluate` needs nothing but the file. The model
packages are imported lazily so this module imports before (or without) them.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from recnas.errors import CheckpointError, DataError
from recnas.train.checkpoint import OlderRecnasCheckpoint

KINDS = ("supernet", "subnet", "baseline")


def _plain(obj):
    """Tuples -> lists etc.: the exact form a spec has after a checkpoint round trip."""
    return json.loads(json.dumps(obj))


def data_spec(meta) -> dict:
    """What a model's shape depends on in the data: {"n_dense", "vocab_sizes"} of `meta`."""
    return {"n_dense": int(meta.n_dense), "vocab_sizes": [int(v) for v in meta.vocab_sizes]}


def supernet_spec(space, meta, sampler: str | None = None) -> dict:
    """The `model_spec` of `Supernet(space, meta)` (the space without a CIN head, which no
    supernet holds), trained with the path sampler named `sampler` (a name of
    `recnas.space.samplers.STRATEGIES`, recorded so a resume with another one is refused):
    `Trainer(..., model_spec=...)` stores it so `load_trained` rebuilds the model."""
    return _plain({"kind": "supernet", "space": space.blocks_only().spec(), "sampler": sampler, "data": data_spec(meta)})


def subnet_spec(arch, space, meta) -> dict:
    """The `model_spec` of `Subnet(arch, space, meta)` (see `supernet_spec`)."""
    return _plain({"kind": "subnet", "space": space.spec(), "arch": arch.to_json(), "data": data_spec(meta)})


def baseline_spec(name: str, hparams: dict, meta) -> dict:
    """The `model_spec` of baseline `name` built with `hparams` for `meta`: pass the model's
    own `.hparams` (every hyper-parameter, defaults included), so the checkpoint rebuilds the
    same model even if a default changes (see `supernet_spec`)."""
    return _plain({"kind": "baseline", "name": name, "hparams": dict(hparams), "data": data_spec(meta)})


def meta_from_spec(spec: dict):
    """A minimal DatasetMeta with the shape a model was built for (names are synthetic)."""
    from recnas.data.schema import DatasetMeta

    data = spec["data"]
    return DatasetMeta(
        name="from-checkpoint",
        dense_names=[f"I{i + 1}" for i in range(data["n_dense"])],
        cat_names=[f"C{i + 1}" for i in range(len(data["vocab_sizes"]))],
        vocab_sizes=list(data["vocab_sizes"]),
        rows={},
    )


def check_data(spec: dict, meta, where: str = "dataset") -> None:
    """A model only fits data with the same dense width and per-field vocabulary sizes."""
    want, got = spec["data"], data_spec(meta)
    if want != got:
        raise DataError(
            f"{where}: the model was trained on data with {want['n_dense']} dense features and vocab sizes "
            f"{want['vocab_sizes']}, this dataset has {got['n_dense']} and {got['vocab_sizes']}{_same_fields_hint(want, got, meta)}"
        )


def _same_fields_hint(want: dict, got: dict, meta) -> str:
    """The way on when only the vocabularies differ: new data of the same format prepared with
    ids of its own (the usual slip when scoring the next day's file), not the training store's."""
    if want["n_dense"] != got["n_dense"] or len(want["vocab_sizes"]) != len(got["vocab_sizes"]):
        return ""
    base = (getattr(meta, "source", None) or {}).get("vocab_from")
    if base:
        return f"; its ids are those of {base.get('store')} (--vocab-from), not of the store the model was trained on"
    return "; data to score must take the ids of the store the model was trained on: prepare it with --vocab-from that store (docs/data.md, scoring new data)"


class SupernetOfOtherPaths(OlderRecnasCheckpoint):
    """`check_supernet_paths`'s refusal: a search job still reports the candidates it scored on
    such a supernet, and refuses only to score more."""

    way_on = "train the supernet again with this recnas (--overwrite)"


def check_supernet_paths(payload: dict, path) -> None:
    """Refuse a supernet trained by a recnas before 2026-12-03 (its training config lacks
    `embedding_weight_decay`, which every config saved since holds) whose space has paths with
    fewer tokens than fields: those paths took the leading rows of the raw fields' projection
    then, and this recnas folds every field onto them (2026-12-05), so it drew other subnets
    from it than were trained: `evaluate --arch`, `--inherit`, the rank study and a continued
    search went on silently with other scores (a 2026-11-25 smoke supernet: 10.7966 -> 10.7876
    test log loss for one arch; 14 of its search's 29 stored scores no longer reproduced). Ones
    of 2026-12-03..05 cannot be told apart and are taken as they are; ones that record a weights
    layout (2026-12-07 on) fold."""
    from recnas.train.checkpoint import layout_of

    spec, config = payload.get("model_spec"), payload.get("config")
    if layout_of(payload) >= 2 or not (isinstance(spec, dict) and spec.get("kind") == "supernet" and isinstance(config, dict) and config and "embedding_weight_decay" not in config):
        return
    from recnas.space import SearchSpace

    try:
        tokens, fields = SearchSpace(**spec["space"]).sparse_dims, len(spec["data"]["vocab_sizes"])
    except Exception:  # an invalid spec is load_trained's to refuse
        return
    if min(tokens) < min(fields, max(tokens)):  # some path folds now
        raise SupernetOfOtherPaths(
            f"{path}: a supernet trained by a recnas before 2026-12-03, whose paths of fewer tokens than the {fields} fields took the leading rows "
            "of the raw fields' projection; this recnas folds every field onto them, so it would draw other subnets from it than were trained"
        )


def build_model(model_spec: dict, meta=None) -> torch.nn.Module:
    """Instantiate the (untrained) module a spec describes; `meta` defaults to the spec's data."""
    kind = model_spec.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"unknown model kind {kind!r} in model_spec; expected one of {', '.join(KINDS)}")
    if meta is None:
        meta = meta_from_spec(model_spec)
    else:
        check_data(model_spec, meta)
    if kind == "baseline":
        from recnas.baselines import build_baseline

        return build_baseline(model_spec["name"], meta, **model_spec.get("hparams", {}))
    from recnas.space import Architecture, SearchSpace

    space = SearchSpace(**model_spec["space"])
    if kind == "supernet":
        from recnas.supernet import Supernet

        return Supernet(space, meta)
    from recnas.supernet import Subnet

    arch = Architecture.model_validate_json(model_spec["arch"])
    return Subnet.from_architecture(arch, space, meta)


def _describe(exc: Exception) -> str:
    """One line for any error: pydantic's per-key messages as every config error words them
    (`configs.explain`), else the exception's type and text."""
    from pydantic import ValidationError

    from recnas.configs import explain

    if isinstance(exc, ValidationError):
        return explain(None, exc)
    return f"{type(exc).__name__}: {exc}"


def weights_step(extra: dict) -> int | None:
    """The step whose weights a file of `load_trained` holds. A run's model.pt under
    restore_best holds its best evaluation's weights while its `step` is the run's last, which
    `evaluate --json-out` reported as the evaluated model's; a checkpoint.pt holds its `step`'s."""
    best = (extra.get("metrics") or {}).get("best_val")
    if (extra.get("config") or {}).get("restore_best") and isinstance(best, dict) and isinstance(best.get("step"), int):
        return best["step"]
    return extra.get("step")


def _check_weights_fit(spec: dict, state, path) -> None:
    """Check that the file's weights fit the model its spec describes before that model is
    built for real: built on the meta device (shapes only, no memory), with every RNG left as
    it was. A spec edited to claim a vocabulary of billions of ids, beside weights of a few
    kilobytes, used to allocate and initialise those tables first (gigabytes, or "out of
    memory: lower the batch size") and be refused only then. A spec that cannot be built on
    the meta device is left to the real build, which says why. Only a spec that claims more ids
    than the file holds weights is built so (every model holds a weight per id at least): the
    meta device runs each torch call through Python, 1.5-3.4 s for the `gpu` preset's supernet
    against 0.4 s for the real build, a cost every load paid for files that fit."""
    from recnas.train.checkpoint import check_model_state

    try:
        claimed = sum(int(v) for v in spec["data"]["vocab_sizes"])
        held = sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor))
    except Exception:  # an invalid spec or state: the real build's and load_model_state's to refuse
        return
    if claimed <= held:
        return
    torch_rng, np_rng, py_rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        with torch.device("meta"):
            skeleton = build_model(spec)
    except Exception:  # an invalid spec, or an op with no meta kernel: the real build's to refuse, as it did
        return
    finally:
        torch.set_rng_state(torch_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
    check_model_state(skeleton, state, path, own_spec=True)


def load_trained(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """(model, model_spec, extra) from a `model.pt` or `checkpoint.pt`; `extra` holds the
    training config, metrics, step and the identity of the data it trained on when the file has
    them (a model.pt records its data since 2026-12-07). The model is on `map_location`
    (a device, or a name such as "cuda"), in training mode as built; it used to stay on the
    CPU whatever `map_location` said."""
    from recnas.train.checkpoint import load_checkpoint, load_model_state

    path = Path(path)
    # mapped on the CPU, not read (to `map_location`): the weights are copied into the model
    # built below, which then moves there, and the payload is dropped; reading it held every
    # table twice, and a checkpoint.pt's optimizer state (twice the weights under Adam) and best
    # weights besides, all for the weights alone
    payload = load_checkpoint(path, map_location="cpu", mmap=True)
    spec = payload["model_spec"]
    if not isinstance(spec, dict) or "data" not in spec:
        raise CheckpointError(f"{path}: checkpoint has no usable model_spec (was it written by a bare Trainer without one?)")
    check_supernet_paths(payload, path)
    try:
        _check_weights_fit(spec, payload["model"], path)
        model = build_model(spec)
    except ImportError as exc:
        raise CheckpointError(f"{path}: cannot rebuild a {spec.get('kind')} model ({exc})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a hand-edited or foreign spec
        raise CheckpointError(f"{path}: the checkpoint's model_spec is invalid ({_describe(exc)})") from None
    load_model_state(model, payload["model"], path, own_spec=True)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    extra = {k: payload[k] for k in ("config", "metrics", "step", "data") if k in payload}
    return model, spec, extra
