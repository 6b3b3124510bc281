"""benchmarks/oracle_bound.py: the planted form with learnt tables, early-stopped on validation."""

import json
import sys

import pytest
import torch

from recnas.data.store import CTRStore
from recnas.data.synthetic import generate
from tests.conftest import benchmark_refused, load_benchmark, make_tiny_store

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


def test_latent_dim_sets_the_width_of_the_learnt_tables(store):
    vocab = store.meta.vocab_sizes
    planted = oracle_bound.model_from_source(store.meta)
    mean, std = torch.zeros(store.meta.n_dense), torch.ones(store.meta.n_dense)
    for width in (4, 32):
        model = oracle_bound.Oracle(planted, vocab, mean, std, set(), latent_dim=width, init_std=0.02)
        assert all(t.weight.shape == (v, width) for t, v in zip(model.latent, vocab))
        assert abs(model.latent[0].weight.detach().std().item() - 0.02) < 0.01
    r = oracle_bound.run(store, set(), epochs=1, batch=256, lr=0.01, seed=0, latent_dim=8, init_std=0.05)
    assert (r["latent_dim"], r["init_std"]) == (8, 0.05) and 0 < r["test_logloss"] < 1


def test_table_decay_reaches_the_embedding_tables_alone(store, monkeypatch):
    """Like the trainer's embedding_weight_decay: the tables get Adam's weight decay, the dense,
    gate, scale and MLP weights none (the bound is compared with models trained so)."""
    groups = []
    adam = torch.optim.Adam

    def spy(params, **kw):
        groups.extend(params)
        return adam(params, **kw)

    monkeypatch.setattr(oracle_bound.torch.optim, "Adam", spy)
    r = oracle_bound.run(store, set(), epochs=1, batch=256, lr=0.01, seed=0, table_decay=1e-3)
    assert r["table_decay"] == 1e-3
    rest, tables = groups
    assert tables["weight_decay"] == 1e-3 and rest["weight_decay"] == 0  # Adam fills in its default, none
    model = _oracle(store)
    table_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    assert len(tables["params"]) == len(table_ids) > 0
    assert len(rest["params"]) == sum(1 for p in model.parameters() if id(p) not in table_ids) > 0
    # and it changes the fit: the decayed run ends elsewhere than the undecayed one
    plain = oracle_bound.run(store, set(), epochs=1, batch=256, lr=0.01, seed=0)
    assert plain["val_logloss"] != r["val_logloss"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--latent-dim", "0"], "--latent-dim must be >= 1"),
        (["--init-std", "0"], "--latent-dim must be >= 1"),
        (["--triple-l1", "1e-4"], "needs --triples all"),
        (["--triples", "all", "--triple-l1", "-1"], "--triple-l1 must be >= 0"),
        (["--patience", "0"], "--patience must be >= 1"),
        (["--table-decay=-1e-3"], "--table-decay must be >= 0"),
        (["--skip-full"], "--skip-full needs at least one --drop"),
    ],
)
def test_bad_settings_are_refused_with_a_message(store, flags, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["oracle_bound.py", "--data", str(store.dir), *flags])
    with pytest.raises(SystemExit) as exc:
        oracle_bound.main()
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def _oracle(store, **form):
    torch.manual_seed(0)
    mean, std = torch.zeros(store.meta.n_dense), torch.ones(store.meta.n_dense)
    return oracle_bound.Oracle(oracle_bound.model_from_source(store.meta), store.meta.vocab_sizes, mean, std, set(), **form)


def test_generic_triples_add_exactly_the_weighted_three_way_product_of_each_field_triple(store):
    model = _oracle(store, triples="all")
    assert not any(t.kind == "triple" for _, t in model.terms)  # the planted ones are hidden
    a = store.split("test")
    dense, sparse = torch.from_numpy(a.dense[:64].copy()), torch.from_numpy(a.sparse[:64].astype("int64"))
    n = store.meta.n_sparse
    pair = next(p for p in range(len(model.pair_i)) if (model.pair_i[p], model.pair_j[p]) == (1, 4))
    with torch.no_grad():
        model.triple_weight.zero_()
        base = model(dense, sparse)
        model.triple_weight[pair, 2] = 5.0  # k = 2 < j = 4: not a triple i < j < k, so no effect
        assert torch.allclose(model(dense, sparse), base)
        model.triple_weight[pair, n - 1] = 0.5
        lat = [model.latent[f](sparse[:, f]) for f in (1, 4, n - 1)]
        assert torch.allclose(model(dense, sparse) - base, 0.5 * (lat[0] * lat[1] * lat[2]).sum(-1), atol=1e-6)
        assert float(model.triple_penalty()) == pytest.approx(0.5)  # the masked 5.0 is not penalised


def test_generic_triples_leave_the_planted_forms_initialisation_unchanged(store):
    planted, generic = _oracle(store), _oracle(store, triples="all")
    assert torch.equal(planted.latent[3].weight, generic.latent[3].weight)
    assert float(planted.triple_penalty()) == 0.0
    r = oracle_bound.run(store, set(), epochs=1, batch=256, lr=0.01, seed=0, triple_l1=1e-3, triples="all")
    assert r["triples"] == "all" and r["triple_l1"] == 1e-3 and 0 < r["test_logloss"] < 1


def test_skip_full_runs_only_the_drop_variants_and_writes_them(store, tmp_path, monkeypatch):
    out = tmp_path / "o.json"
    argv = ["oracle_bound.py", "--data", str(store.dir), "--epochs", "1", "--batch", "512", "--skip-full", "--drop", "triple", "--json-out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    oracle_bound.main()
    assert [r["drop"] for r in json.loads(out.read_text())["results"]] == [["triple"]]


def test_bad_arguments_are_refused_before_any_data_is_generated(tmp_path, monkeypatch):
    missing = tmp_path / "not-yet"
    monkeypatch.setattr(sys, "argv", ["oracle_bound.py", "--data", str(missing), "--drop", "pairs"])
    with pytest.raises(SystemExit):
        oracle_bound.main()
    assert not missing.exists()


def test_a_store_not_made_by_the_generator_is_one_clear_line(tmp_path, capsys):
    """It was a TypeError on the store's missing Bayes loss."""
    store = make_tiny_store(tmp_path / "tiny")
    err = benchmark_refused("oracle_bound", ["--data", str(store.dir), "--epochs", "1", "--json-out", str(tmp_path / "o.json")], capsys)
    assert "not made by the synthetic generator" in err and not (tmp_path / "o.json").exists()
