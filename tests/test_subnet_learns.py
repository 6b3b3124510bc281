"""A NASRec subnet trained on the synthetic benchmark beats logistic regression."""

import numpy as np

from recnas.baselines import build_baseline
from recnas.data.store import CTRStore
from recnas.data.synthetic import generate
from recnas.space import Architecture, BlockSpec, get_space
from recnas.supernet import Subnet
from recnas.train import Trainer, TrainConfig


def test_subnet_beats_logistic_regression_on_synthetic_data(tmp_path):
    # stronger planted signal and smaller vocabularies: the interactions are learnable from 30k rows
    generate(tmp_path / "syn", rows=30_000, seed=0, signal=3.0, max_vocab=100)
    store = CTRStore(tmp_path / "syn")
    space = get_space("small-tiny", dense_dims=(16, 32), sparse_dims=(8, 16))
    arch = Architecture(blocks=(
        BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=32, sparse_dim=16),
        BlockSpec(dense_ops=("fc",), sparse_ops=("efc",), dense_inputs=(1,), sparse_inputs=(0, 1), dense_dim=32, sparse_dim=8),
        BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=(1, 2), sparse_inputs=(2,), dense_dim=16, sparse_dim=8),
    ))
    cfg = TrainConfig(batch_size=256, epochs=3, lr=3e-3, device="cpu", seed=0)
    results = {}
    for name, model in (("subnet", Subnet(arch, space, store.meta)), ("lr", build_baseline("lr", store.meta))):
        results[name] = Trainer(model, cfg, store, progress=False).fit().best_val["logloss"]
    assert np.isfinite(results["subnet"]) and results["subnet"] < results["lr"] - 0.02, results  # measured 0.459 vs 0.501
