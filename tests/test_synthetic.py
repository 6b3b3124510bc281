"""The synthetic benchmark: complete store, reproducibility, Bayes numbers, raw text, bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from recnas.data.planted import planted_model
from recnas.data.schema import SPLITS, DatasetMeta
from recnas.data.store import CTRStore
from recnas.data.synthetic import BLOCK, generate, model_from_source, split_assignment, true_probability
from recnas.errors import ConfigError, DataError

ROWS = 20_000


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root / "store", rows=ROWS, seed=3, raw_out=root / "train.txt")
    return root


def _files(store_dir):
    return {f"{s}/{c}": (store_dir / s / f"{c}.npy").read_bytes() for s in SPLITS for c in ("dense", "sparse", "label")}


def test_store_is_complete_with_criteo_shape(synth):
    store = CTRStore(synth / "store")
    meta = store.meta
    assert meta.rows == {"train": 16_000, "val": 2_000, "test": 2_000}
    assert (meta.n_dense, meta.n_sparse) == (13, 26)
    sizes = np.array(meta.vocab_sizes)
    assert sizes.min() >= 3 and sizes.max() <= 2000 and sizes.max() >= 100 * sizes.min()
    assert np.median(sizes) < 0.2 * sizes.max()  # a few large fields, most small
    for name in SPLITS:
        a = store.split(name)
        assert a.dense.dtype == np.float32 and a.sparse.dtype == np.int32 and a.label.dtype == np.float32
        counts = np.expm1(a.dense.astype(np.float64))
        assert (a.dense >= 0).all() and np.allclose(counts, np.round(counts), atol=1e-3 * (1 + counts))
        assert ((a.sparse >= 0) & (a.sparse < sizes)).all()
        assert set(np.unique(a.label)) == {0.0, 1.0}
        assert abs(meta.positive_rate[name] - 0.25) < 0.04
        assert meta.positive_rate[name] == pytest.approx(float(a.label.mean()))
    train = store.split("train")
    assert 0.02 < (train.dense == 0).mean() < 0.5  # some missing / zero counts
    assert (train.sparse == 0).mean(0).max() > 0.01  # some missing categoricals (id 0)
    top_share = max(np.bincount(train.sparse[:, f]).max() / len(train) for f in np.argsort(sizes)[-5:])
    assert top_share > 0.05  # power law: the head id of a large field is far above uniform
    for key in ("val_logloss", "val_auc", "test_logloss", "test_auc", "test_expected_logloss", "val_expected_logloss", "train_logloss"):
        assert key in meta.bayes
    assert 0.35 < meta.bayes["test_expected_logloss"] < 0.47 and 0.7 < meta.bayes["test_auc"] < 0.9


def test_same_seed_same_bytes_different_seed_differs(synth, tmp_path):
    generate(tmp_path / "again", rows=ROWS, seed=3, chunk_rows=8192)  # other chunking, same rows
    assert _files(tmp_path / "again") == _files(synth / "store")
    assert DatasetMeta.load(tmp_path / "again").bayes == pytest.approx(DatasetMeta.load(synth / "store").bayes, rel=1e-12)
    generate(tmp_path / "other", rows=ROWS, seed=4)
    a, b = CTRStore(tmp_path / "other").split("train"), CTRStore(synth / "store").split("train")
    assert not np.array_equal(a.sparse, b.sparse) and not np.array_equal(a.label, b.label)


def test_recorded_bayes_numbers_are_recomputable(synth):
    store = CTRStore(synth / "store")
    bayes = store.meta.bayes
    for name in ("val", "test"):
        a = store.split(name)
        p = true_probability(a.dense, a.sparse, store.meta)
        assert log_loss(a.label, p) == pytest.approx(bayes[f"{name}_logloss"], abs=1e-9)
        assert roc_auc_score(a.label, p) == pytest.approx(bayes[f"{name}_auc"], abs=1e-9)
        entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
        assert entropy.mean() == pytest.approx(bayes[f"{name}_expected_logloss"], abs=1e-9)


def test_labels_are_drawn_from_the_recorded_p_and_train_numbers_recompute(tmp_path):
    """Each row's label is u < p with u from its block's stream [seed, 0xB10C, block] (after its
    features) and p the true probability of its *stored* features; the train numbers (streamed
    over chunks) are those of the stored train rows. Two blocks, one chunk each."""
    rows, seed = 9000, 5
    meta = generate(tmp_path / "s", rows=rows, seed=seed, n_dense=2, n_sparse=3, max_vocab=40, chunk_rows=1)
    model = model_from_source(meta)
    u = []
    for b in range(2):
        rng = np.random.default_rng([seed, 0xB10C, b])
        model.sample_counts(rng, min(BLOCK, rows - b * BLOCK))
        u.append(rng.random(min(BLOCK, rows - b * BLOCK)))
    u, assign, store = np.concatenate(u), split_assignment(rows, seed), CTRStore(tmp_path / "s")
    for k, name in enumerate(SPLITS):
        a = store.split(name)
        p = true_probability(a.dense, a.sparse, meta)
        np.testing.assert_array_equal(a.label, (u[assign == k] < p).astype(np.float32))
        if name == "train":
            assert meta.bayes["train_logloss"] == pytest.approx(log_loss(a.label, p), abs=1e-12)
            entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
            assert meta.bayes["train_expected_logloss"] == pytest.approx(entropy.mean(), abs=1e-12)
            assert meta.positive_rate["train"] == float(a.label.sum(dtype=np.float64)) / len(a.label)


def test_bayes_logloss_agrees_with_monte_carlo(synth):
    """Resampled labels: the mean log loss of the true p converges to the mean entropy."""
    store = CTRStore(synth / "store")
    a = store.split("test")
    p = true_probability(a.dense, a.sparse, store.meta)
    ll1, ll0 = -np.log(p), -np.log1p(-p)
    rng = np.random.default_rng(0)
    draws = np.array([np.where(rng.random(len(p)) < p, ll1, ll0).mean() for _ in range(400)])
    expected = store.meta.bayes["test_expected_logloss"]
    assert abs(draws.mean() - expected) < 4 * draws.std() / np.sqrt(len(draws))
    # The realised loss on the stored labels is one such draw: within 4 standard errors.
    se = np.sqrt((p * (1 - p) * (ll1 - ll0) ** 2).sum()) / len(p)
    assert abs(store.meta.bayes["test_logloss"] - expected) < 4 * se
    assert draws.std() == pytest.approx(se, rel=0.2)


def _one_hot(a, vocab_sizes):
    offsets = np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]])
    n, f = a.sparse.shape
    onehot = sp.csr_matrix((np.ones(n * f), (np.repeat(np.arange(n), f), (a.sparse + offsets).ravel())), shape=(n, sum(vocab_sizes)))
    return sp.hstack([onehot, sp.csr_matrix(a.dense / 5.0)]).tocsr()


def test_interactions_carry_the_signal(synth):
    """A first-order model (logistic regression on one-hot + dense) stays far from Bayes."""
    store = CTRStore(synth / "store")
    train, test = store.split("train"), store.split("test")
    lr = LogisticRegression(C=0.1, max_iter=500).fit(_one_hot(train, store.meta.vocab_sizes), train.label)
    lr_loss = log_loss(test.label, lr.predict_proba(_one_hot(test, store.meta.vocab_sizes))[:, 1])
    assert lr_loss > store.meta.bayes["test_logloss"] + 0.05
    # The crosses are centred under the id frequencies: no marginal effect on a single field.
    model = model_from_source(store.meta)
    for f, (freq, latent) in enumerate(zip(model.id_freq, model.latent)):
        assert np.abs(freq @ latent).max() < 1e-9, f"field {f} latent not centred"


def test_raw_text_matches_store(synth):
    lines = (synth / "train.txt").read_text().split("\n")
    assert lines[-1] == "" and len(lines) == ROWS + 1
    rows = [line.split("\t") for line in lines[:-1]]
    assert {len(r) for r in rows} == {40}
    cols = list(zip(*rows))
    label = np.array(cols[0], dtype=np.float32)
    ints = [np.array([int(x) if x else -1 for x in c]) for c in cols[1:14]]
    cats = cols[14:]
    assert all(x == "" or (len(x) == 8 and int(x, 16) >= 0 and x == x.lower()) for c in cats for x in c)
    assert all(min(c) >= -1 for c in ints) and any((c == -1).any() for c in ints)  # some empty dense
    assert any("" in c for c in cats)

    store = CTRStore(synth / "store")
    assign = split_assignment(ROWS, seed=3)
    dense_raw = np.log1p(np.maximum(np.stack(ints, 1), 0)).astype(np.float32)
    for k, name in enumerate(SPLITS):
        a, sel = store.split(name), assign == k
        np.testing.assert_array_equal(a.label, label[sel])
        np.testing.assert_allclose(a.dense, dense_raw[sel], rtol=1e-6)
    # Hex strings and store ids are the same partition: one id per string, "" <-> id 0.
    full_sparse = np.empty((ROWS, 26), dtype=np.int32)
    for k, name in enumerate(SPLITS):
        full_sparse[assign == k] = store.split(name).sparse
    for f, c in enumerate(cats):
        pairs = set(zip(c, full_sparse[:, f].tolist()))
        assert len({h for h, _ in pairs}) == len(pairs) == len({i for _, i in pairs})
        assert all((h == "") == (i == 0) for h, i in pairs)


def test_small_config_and_true_probability_checks(tmp_path):
    meta = generate(tmp_path / "s", rows=np.int64(300), seed=1, n_dense=np.int64(1), n_sparse=3, max_vocab=50)
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["source"]["config"]["n_dense"] == 1
    a = CTRStore(tmp_path / "s").split("train")
    assert a.dense.shape == (240, 1) and a.sparse.shape == (240, 3)
    p = true_probability(a.dense, a.sparse, meta.source)
    assert p.shape == (240,) and ((p > 0) & (p < 1)).all()
    with pytest.raises(DataError, match="expects dense"):
        true_probability(a.dense, a.sparse[:, :2], meta)
    with pytest.raises(DataError, match="vocabulary"):
        true_probability(a.dense, a.sparse + 100, meta)
    tampered = json.loads(json.dumps(meta.source))
    tampered["planted"]["bias"] += 0.5
    with pytest.raises(DataError, match="different code"):
        true_probability(a.dense, a.sparse, tampered)
    with pytest.raises(DataError, match="not made by the synthetic generator"):
        true_probability(a.dense, a.sparse, {"generator": "criteo"})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rows": 50}, "rows must be an integer in"),
        ({"rows": 1000.0}, "rows must be an integer in"),
        ({"seed": -1}, "seed must be"),
        ({"seed": (0xB10C << 32) | 3}, r"seed must be an integer in \[0, 4,294,967,295\]"),  # numpy split it into 32-bit words: it shared seed 3's streams
        ({"n_sparse": 2}, "n_sparse must be in 3"),
        ({"n_dense": 0}, "n_dense must be in 1"),
        ({"positive_rate": 1.5}, "positive_rate"),
        ({"max_vocab": 1}, "min_vocab <= max_vocab"),
        ({"signal": "high"}, "signal must be a number"),
        # a numpy float for an integer knob was cut down without a word (n_dense 13.9 -> 13), where
        # the same Python float was refused; numpy integers and float knobs are still taken
        ({"n_dense": np.float64(13.9)}, "n_dense must be an integer, got .*13.9"),
        ({"max_vocab": np.float32(100.0)}, "max_vocab must be an integer"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        generate(tmp_path / "bad", **{"rows": 200, **kwargs})
    assert not (tmp_path / "bad").exists()


def test_existing_outputs_need_overwrite(tmp_path):
    generate(tmp_path / "s", rows=200, seed=3, raw_out=tmp_path / "raw.txt")  # seed 3: model cached
    before = (tmp_path / "s" / "train" / "label.npy").read_bytes()
    with pytest.raises(DataError, match="already exists"):
        generate(tmp_path / "s", rows=200, seed=1)
    with pytest.raises(DataError, match="already exists"):
        generate(tmp_path / "t", rows=200, seed=1, raw_out=tmp_path / "raw.txt")
    with pytest.raises(DataError, match="is a directory"):
        generate(tmp_path / "t", rows=200, seed=1, raw_out=tmp_path)
    assert (tmp_path / "s" / "train" / "label.npy").read_bytes() == before
    assert not (tmp_path / "t").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["raw.txt", "s"]
    meta = generate(tmp_path / "s", rows=300, seed=3, raw_out=tmp_path / "raw.txt", overwrite=True)
    assert CTRStore(tmp_path / "s").meta.rows == meta.rows == {"train": 240, "val": 30, "test": 30}
    assert len((tmp_path / "raw.txt").read_text().splitlines()) == 300
    generate(tmp_path / "g", rows=300, seed=3, raw_out=tmp_path / "raw.txt.gz")  # compressed, as the name says (prepare reads .gz as gzip)
    assert gzip.decompress((tmp_path / "raw.txt.gz").read_bytes()).decode() == (tmp_path / "raw.txt").read_text()


def test_outputs_must_not_overlap_and_overwrite_only_replaces_a_store(tmp_path):
    """Replacing --out would delete a --raw-out inside it; a path below a file cannot be made."""
    (tmp_path / "file").write_text("f")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("keep")
    cases = [
        ({"out": tmp_path / "s", "raw_out": tmp_path / "s" / "raw.txt"}, "--raw-out .* is inside --out"),
        ({"out": tmp_path / "s", "raw_out": tmp_path / "s"}, "--raw-out .* is the same path as --out"),
        ({"out": tmp_path / "r" / "s", "raw_out": tmp_path / "r"}, "--out .* is inside --raw-out"),
        ({"out": tmp_path / "file" / "s"}, "file is not a directory"),
        ({"out": tmp_path / "s", "raw_out": tmp_path / "file" / "raw.txt"}, "file is not a directory"),
        ({"out": tmp_path / "other", "overwrite": True}, "not a recnas store"),
        ({"out": tmp_path / "file", "overwrite": True}, "exists and is not a directory"),
    ]
    for kwargs, match in cases:
        with pytest.raises(DataError, match=match):
            generate(rows=200, seed=3, **kwargs)
        assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["file", "other", "other/keep.txt"]
    assert (tmp_path / "file").read_text() == "f"


def test_raw_out_inside_another_store_is_refused(tmp_path):
    """It wrote raw.txt into that store, whose --overwrite was then refused (raw.txt is not part of one)."""
    generate(tmp_path / "s", rows=200, seed=3)
    with pytest.raises(DataError, match=r"--raw-out .*raw.txt is inside the recnas store .*s; choose a --raw-out outside it"):
        generate(tmp_path / "t", rows=200, seed=3, raw_out=tmp_path / "s" / "raw.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"] and not (tmp_path / "s" / "raw.txt").exists()
    generate(tmp_path / "s", rows=200, seed=3, overwrite=True)  # still replaceable


def test_planted_model_is_cached_and_deterministic():
    from recnas.data.planted import PlantedModel, SynthConfig

    a, b = PlantedModel(SynthConfig(), 3), planted_model(SynthConfig(), 3)
    assert a.bias == b.bias and a.vocab_sizes == b.vocab_sizes and np.array_equal(a.scales, b.scales)
    assert planted_model(SynthConfig(), 3) is b


def test_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    import recnas.data.synthetic as synthetic

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "_write_raw_chunk", broken)
    with pytest.raises(OSError, match="disk full"):
        generate(tmp_path / "s", rows=200, seed=3, raw_out=tmp_path / "raw.txt")
    assert list(tmp_path.iterdir()) == []


def test_failed_store_commit_keeps_the_previous_raw_file(tmp_path, monkeypatch):
    """The raw file is swapped in after the store: a failure at the store's commit must not leave
    a new raw file beside the old store."""
    generate(tmp_path / "s", rows=200, seed=3, raw_out=tmp_path / "raw.txt")
    before = {p.name: p.read_bytes() for p in [tmp_path / "raw.txt", tmp_path / "s" / "meta.json", tmp_path / "s" / "train" / "label.npy"]}

    def broken(self, directory):
        raise OSError("disk full")

    monkeypatch.setattr(DatasetMeta, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        generate(tmp_path / "s", rows=300, seed=4, raw_out=tmp_path / "raw.txt", overwrite=True)
    assert {p.name: p.read_bytes() for p in [tmp_path / "raw.txt", tmp_path / "s" / "meta.json", tmp_path / "s" / "train" / "label.npy"]} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.txt", "s"]


SMALL = dict(n_dense=3, n_sparse=5, max_vocab=40)


def test_each_planted_term_is_its_written_out_form():
    """term_contributions: every term's value times its scale, and the logit is the bias plus
    their sum; a triple term multiplies three latent vectors, a gate squashes 2 z (mutation round
    4: P08 P10 P15)."""
    from recnas.data.planted import SynthConfig

    m = planted_model(SynthConfig(**SMALL), 1)
    counts, _, sparse = m.sample_counts(np.random.default_rng(0), 50)
    dense = m.dense_transform(counts)
    got = m.term_contributions(dense, sparse)
    z = (dense.astype(np.float64) - m.dense_mean) / m.dense_std
    for i, t in enumerate(m.terms):
        lat = [m.latent[f][sparse[:, f]] for f in t.fields]
        if t.kind == "first":
            v = z @ m.dense_w + sum(w[sparse[:, f]] for f, w in enumerate(m.first_w))
        elif t.kind in ("pair", "triple"):
            assert len(lat) == {"pair": 2, "triple": 3}[t.kind]
            v = np.prod(lat, axis=0).sum(1)
        elif t.kind == "cross":
            v = z[:, t.dense[0]] * m.effect[i][sparse[:, t.fields[0]]]
        elif t.kind == "gate":
            v = m.effect[i][sparse[:, t.fields[0]]] / (1 + np.exp(-2 * z[:, t.dense[0]]))
        else:
            v = np.tanh(np.concatenate(lat + [z[:, list(t.dense)]], 1) @ m.mlp_w1 + m.mlp_b1) @ m.mlp_w2
        np.testing.assert_allclose(got[:, i], m.scales[i] * v, rtol=1e-9, atol=1e-12)
    assert sorted({t.kind for t in m.terms}) == ["cross", "first", "gate", "mlp", "pair", "triple"]
    np.testing.assert_allclose(m.logit(dense, sparse), m.bias + got.sum(1), rtol=1e-12)


def test_signal_scales_every_term_and_a_constant_dense_feature_is_harmless():
    """`signal` multiplies every scale (P07); a dense column constant over the calibration sample
    is standardised by 1, not 0 (P12: NaN scales and bias otherwise; mutation round 4)."""
    from recnas.data.planted import PlantedModel, SynthConfig

    one, two = planted_model(SynthConfig(**SMALL), 2), planted_model(SynthConfig(**SMALL, signal=2.0), 2)
    np.testing.assert_allclose(two.scales, 2 * one.scales, rtol=1e-12)

    class Flat(PlantedModel):
        def sample_counts(self, rng, n):
            counts, missing, sparse = super().sample_counts(rng, n)
            counts[:, 0] = 0
            return counts, missing, sparse

    flat = Flat(SynthConfig(**SMALL), 2)
    assert flat.dense_std[0] == 1.0 and np.isfinite(flat.scales).all() and np.isfinite(flat.bias)


def test_dense_transform_is_log1p_of_the_count_clipped_at_zero():
    """log(max(x, 0) + 1), float32 (mutation round 4, P13)."""
    from recnas.data.planted import PlantedModel

    got = PlantedModel.dense_transform(np.array([[-3, 0, 2]]))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.0, 0.0, np.log(3.0)]], rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"signal": float("nan")}, "signal must be a number, got nan"),
    ({"max_vocab": 10_000_001}, "max_vocab must be at most 10,000,000"),
])
def test_synth_config_names_a_nan_or_an_oversized_vocabulary(kwargs, match):
    """Mutation round 4, P11 P14."""
    from recnas.data.planted import SynthConfig

    with pytest.raises(ConfigError, match=match):
        SynthConfig(**kwargs).validate()


def test_an_id_equal_to_its_vocabulary_size_is_outside_it():
    """The largest valid id is vocab - 1: vocab itself is a DataError, not an IndexError (P09)."""
    from recnas.data.planted import SynthConfig

    m = planted_model(SynthConfig(**SMALL), 1)
    counts, _, sparse = m.sample_counts(np.random.default_rng(0), 4)
    sparse[0, 2] = m.vocab_sizes[2]
    with pytest.raises(DataError, match="outside the vocabulary sizes"):
        m.probability(m.dense_transform(counts), sparse)


def test_a_store_of_another_generator_version_is_refused():
    """Mutation round 4, Y09."""
    source = {"generator": "recnas.data.synthetic", "version": 2, "config": SMALL, "seed": 1}
    with pytest.raises(DataError, match="synthetic dataset version 2 is not supported"):
        model_from_source(source)


def test_chunking_at_a_size_not_a_multiple_of_the_block_writes_the_same_store(tmp_path):
    """chunk_rows is rounded down to whole BLOCKs, so chunks start on a block's stream (Y03)."""
    kw = dict(rows=BLOCK + 808, seed=5, n_dense=2, n_sparse=3, max_vocab=40)
    generate(tmp_path / "a", **kw)
    generate(tmp_path / "b", **kw, chunk_rows=BLOCK + 1)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_bayes_summary_has_no_auc_for_a_split_of_one_class():
    """AUC is undefined with one class: left out, the log loss kept (mutation round 4, Y11)."""
    from recnas.data.synthetic import _BayesStats

    stats = _BayesStats()
    stats.add("val", np.array([0.2, 0.4]), np.zeros(2))
    stats.add("test", np.array([0.2, 0.4]), np.array([0.0, 1.0]))
    out = stats.summary()
    assert "val_auc" not in out and out["test_auc"] == 1.0
    assert out["val_logloss"] == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)


def test_planted_terms_read_the_smaller_two_thirds_and_every_table_is_centred():
    """12 fields: 10 pairs among the 8 smallest vocabularies plus one big x small pair, 3 crosses,
    2 triples, one MLP and 2 gates on small fields (P16 P19 P21); first-order weights and the
    cross/gate effects are centred under the id frequencies like the latents (P17 P18; round 4)."""
    from recnas.data.planted import SynthConfig

    m = planted_model(SynthConfig(n_dense=2, n_sparse=12, max_vocab=40), 0)
    small = set(np.argsort(m.vocab_sizes, kind="stable")[:8].tolist())
    kinds = [t.kind for t in m.terms]
    assert {k: kinds.count(k) for k in set(kinds)} == {"first": 1, "pair": 11, "cross": 3, "triple": 2, "mlp": 1, "gate": 2}
    pairs = [t for t in m.terms if t.kind == "pair"]
    assert len({t.fields for t in pairs[:10]}) == 10 and all(set(t.fields) <= small for t in pairs[:10])
    assert pairs[10].fields[0] not in small and pairs[10].fields[1] in small
    assert all(set(t.fields) <= small for t in m.terms if t.kind in ("cross", "triple", "mlp", "gate"))
    for f, freq in enumerate(m.id_freq):
        assert abs(freq @ m.first_w[f]) < 1e-9
    for i, t in enumerate(m.terms):
        if t.kind in ("cross", "gate"):
            assert abs(m.id_freq[t.fields[0]] @ m.effect[i]) < 1e-9


def test_the_bias_meets_the_positive_rate_on_the_calibration_sample():
    """The bias is bisected to convergence: on the seeded calibration sample the mean true p is
    the configured positive rate (mutation round 4, P20)."""
    from recnas.data.planted import CALIBRATION_ROWS, SynthConfig

    m = planted_model(SynthConfig(**SMALL, positive_rate=0.3), 4)
    counts, _, sparse = m.sample_counts(np.random.default_rng([4, 0xCA1B]), CALIBRATION_ROWS)
    assert m.probability(m.dense_transform(counts), sparse).mean() == pytest.approx(0.3, abs=1e-9)


def test_a_shared_activity_factor_correlates_the_dense_counts():
    """The two dense features with the largest shared share are positively correlated after the
    log transform; independent draws would leave ~0 (mutation round 4, P22)."""
    from recnas.data.planted import SynthConfig

    m = planted_model(SynthConfig(), 0)
    i, j = np.argsort(m.dense_shared)[-2:]
    assert m.dense_shared[i] > 0.4 and m.dense_shared[j] > 0.4
    counts, missing, _ = m.sample_counts(np.random.default_rng(1), 20_000)
    keep = ~missing[:, i] & ~missing[:, j]
    x = m.dense_transform(counts)[keep]
    assert np.corrcoef(x[:, i], x[:, j])[0, 1] > 0.1


def test_a_bool_is_not_an_integer_argument(tmp_path):
    """seed=True used to be taken as seed 1 (mutation round 4, Y16)."""
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 4,294,967,295\], got True"):
        generate(tmp_path / "bad", rows=200, seed=True)
    assert not (tmp_path / "bad").exists()
