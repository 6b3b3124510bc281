"""benchmarks/oracle_bound.py: the planted form with learnt tables, early-stopped on validation."""

import pytest

from recnas.data.store import CTRStore
from recnas.data.synthetic import generate
from tests.conftest import load_benchmark

oracle_bound = load_benchmark("oracle_bound")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "d"
    generate(path, rows=3000, seed=0)
    return CTRStore(path)


def test_patience_stops_after_that_many_epochs_without_a_better_validation_loss(store):
    # a large step size on 2,400 rows overfits within a few epochs
    r = oracle_bound.run(store, set(), epochs=30, batch=256, lr=0.05, seed=0, patience=2)
    assert r["epochs_run"] < 30
    assert r["epochs_run"] == r["epoch"] + 2  # the best epoch, then two worse ones


def test_without_patience_every_epoch_runs_and_the_best_one_is_reported(store):
    r = oracle_bound.run(store, {"triple"}, epochs=4, batch=256, lr=0.05, seed=0)
    assert r["epochs_run"] == 4 and 1 <= r["epoch"] <= 4
    assert r["drop"] == ["triple"] and 0 < r["test_logloss"] < 1
