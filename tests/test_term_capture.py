"""benchmarks/term_capture.py: per-term regression of a model's logit on the planted terms."""

import json
from pathlib import Path

import numpy as np
import pytest

from recnas.baselines import build_baseline
from recnas.data.store import CTRStore
from recnas.data.synthetic import generate, model_from_source
from recnas.train import save_checkpoint
from recnas.train.model_factory import baseline_spec
from tests.conftest import load_benchmark

term_capture = load_benchmark("term_capture")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "d"
    generate(path, rows=3000, seed=0)
    store = CTRStore(path)
    planted = model_from_source(store.meta)
    train = store.split("train")  # 2400 rows: plenty for an exact fit of 20 noise-free coefficients
    contrib = planted.term_contributions(train.dense, train.sparse)
    return store, planted, contrib, np.asarray(train.label)


def test_true_logit_captures_every_term(synth):
    _, planted, contrib, labels = synth
    kinds = [t.kind for t in planted.terms]
    assert set(kinds) == {"first", "pair", "cross", "triple", "mlp", "gate"}
    r = term_capture.capture(planted.bias + contrib.sum(1), contrib, labels, kinds, planted.bias)
    np.testing.assert_allclose(r["coef"], 1.0, atol=1e-6)
    assert r["r2"] == pytest.approx(1.0) and r["residual_std"] < 1e-6 and r["intercept"] == pytest.approx(planted.bias)
    assert r["logloss"] == pytest.approx(r["bayes_logloss"]) and all(k["mean"] == pytest.approx(1.0) for k in r["by_kind"].values())


def test_missing_triples_show_as_zero(synth):
    _, planted, contrib, labels = synth
    kinds = np.array([t.kind for t in planted.terms])
    f = planted.bias + contrib.sum(1) - contrib[:, kinds == "triple"].sum(1)
    r = term_capture.capture(f, contrib, labels, list(kinds), planted.bias)
    coef = np.array(r["coef"])
    np.testing.assert_allclose(coef[kinds == "triple"], 0.0, atol=1e-6)
    np.testing.assert_allclose(coef[kinds != "triple"], 1.0, atol=1e-6)
    assert r["by_kind"]["triple"]["mean"] == pytest.approx(0.0, abs=1e-6) and len(r["by_kind"]["triple"]["coef"]) == 2
    assert r["r2"] < 0.99 and r["logloss"] > r["bayes_logloss"]


def test_main_writes_json(synth, tmp_path, capsys):
    store = synth[0]
    model = build_baseline("lr", store.meta)  # untrained is enough: the script only reads logits
    save_checkpoint(tmp_path / "lr" / "model.pt", {"model": model.state_dict(), "model_spec": baseline_spec("lr", model.hparams, store.meta)})
    out = tmp_path / "tc.json"
    ckpt = str(tmp_path / "lr" / "model.pt")
    term_capture.main(["--data", str(store.dir), ckpt, ckpt, "--names", "a,b", "--rows", "100", "--out", str(out)])
    report = json.loads(out.read_text())
    assert [m["name"] for m in report["models"]] == ["a", "b"] and report["rows"] == 100 and len(report["terms"]) == 20
    assert len(report["models"][0]["coef"]) == len(report["terms"]) and "triple" in report["models"][0]["by_kind"]
    assert "Bayes log loss" in capsys.readouterr().out


def test_a_store_not_made_by_the_generator_is_one_clear_line(tmp_path):
    import subprocess
    import sys

    from tests.conftest import make_tiny_store

    store = make_tiny_store(tmp_path / "tiny")
    script = Path(__file__).parents[1] / "benchmarks" / "term_capture.py"
    r = subprocess.run([sys.executable, str(script), "--data", str(store.dir), str(tmp_path / "none.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not made by the synthetic generator" in r.stderr
