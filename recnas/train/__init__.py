"""Training engine: config, loop, metrics, checkpoints and model rebuilding.

Heavy pieces are imported from their modules; this package namespace re-exports the API.
"""

from recnas.train.checkpoint import load_checkpoint, save_checkpoint, seed_everything
from recnas.train.config import TrainConfig, merge_overrides
from recnas.train.metrics import ctr_metrics, evaluate, predict, predict_proba, probabilities
from recnas.train.model_factory import baseline_spec, build_model, load_trained, subnet_spec, supernet_spec
from recnas.train.trainer import FitResult, Trainer

__all__ = [
    "FitResult", "TrainConfig", "Trainer", "baseline_spec", "build_model", "ctr_metrics", "evaluate",
    "load_checkpoint", "load_trained", "merge_overrides", "predict", "predict_proba", "probabilities", "save_checkpoint", "seed_everything", "subnet_spec", "supernet_spec",
]
