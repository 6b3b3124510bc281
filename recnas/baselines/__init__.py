"""Hand-designed CTR baselines (LR, DLRM, DeepFM, DCN-V2, AutoInt(+), xDeepFM).

    model = build_baseline("dcnv2", meta, mlp=[64, 64])
    clone = build_baseline("dcnv2", meta, **model.hparams)   # same architecture

See docs/baselines.md for each model's defaults and where they come from.
"""

from __future__ import annotations

from typing import Any

from recnas.baselines.autoint import AutoInt
from recnas.baselines.base import Baseline, HParams, describe_hparams
from recnas.baselines.dcnv2 import DCNv2
from recnas.baselines.deepfm import DeepFM
from recnas.baselines.dlrm import DLRM
from recnas.baselines.lr import LogisticRegression
from recnas.baselines.xdeepfm import XDeepFM
from recnas.data.schema import DatasetMeta
from recnas.errors import ConfigError

BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls for cls in (LogisticRegression, DLRM, DeepFM, DCNv2, AutoInt, XDeepFM)
}


def baseline_class(name: str) -> type[Baseline]:
    """The class registered under `name`; ConfigError listing the known names otherwise."""
    try:
        return BASELINES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown baseline {name!r}; available: {', '.join(BASELINES)}") from None


def default_hparams(name: str) -> dict[str, Any]:
    """All hyper-parameters of `name` with their default values."""
    return baseline_class(name).Config().model_dump()


def build_baseline(name: str, meta: DatasetMeta, **hparams: Any) -> Baseline:
    """Build baseline `name` for the dataset described by `meta`; unset hyper-parameters take defaults."""
    return baseline_class(name)(meta, **hparams)


__all__ = [
    "BASELINES",
    "AutoInt",
    "Baseline",
    "DCNv2",
    "DLRM",
    "DeepFM",
    "HParams",
    "LogisticRegression",
    "XDeepFM",
    "baseline_class",
    "build_baseline",
    "default_hparams",
    "describe_hparams",
]
