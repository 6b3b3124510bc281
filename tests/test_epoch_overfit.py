"""benchmarks/epoch_overfit.py: train a model on from its best weights with one group of parameters frozen."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recnas.baselines import build_baseline
from recnas.errors import ConfigError
from recnas.train import TrainConfig, load_trained, save_checkpoint
from recnas.train.model_factory import baseline_spec
from tests.conftest import load_benchmark

epoch_overfit = load_benchmark("epoch_overfit")
SCRIPT = Path(__file__).parents[1] / "benchmarks" / "epoch_overfit.py"
RECIPE = {"batch_size": 64, "lr": 1e-2, "embedding_weight_decay": 1e-3, "device": "cpu", "seed": 3}


@pytest.fixture
def dlrm_ckpt(tiny_store, tmp_path):
    """An (untrained) DLRM saved as a model.pt with its training recipe, as a trained one is."""
    torch.manual_seed(0)
    model = build_baseline("dlrm", tiny_store.meta)
    path = tmp_path / "dlrm" / "model.pt"
    save_checkpoint(path, {"model": model.state_dict(), "model_spec": baseline_spec("dlrm", model.hparams, tiny_store.meta), "config": TrainConfig(**RECIPE).model_dump()})
    return path


def _tables(model) -> set[str]:
    ids = epoch_overfit.embedding_param_ids(model)
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_groups_split_tables_from_the_rest(dlrm_ckpt):
    model = load_trained(dlrm_ckpt)[0]
    names = {n for n, _ in model.named_parameters()}
    tables = _tables(model)
    assert tables and tables != names
    assert epoch_overfit.frozen_names(model, "none") == set()
    assert epoch_overfit.frozen_names(model, "tables") == tables
    assert epoch_overfit.frozen_names(model, "dense") == names - tables
    top = epoch_overfit.frozen_names(model, r"re:^top\.")
    assert top and all(n.startswith("top.") for n in top)


@pytest.mark.parametrize("group, message", [("re:(", "not a regular expression"), ("re:nothing_like_this", "matches no parameter"), ("mlp", "unknown group")])
def test_bad_groups_are_config_errors(dlrm_ckpt, group, message):
    with pytest.raises(ConfigError, match=message):
        epoch_overfit.frozen_names(load_trained(dlrm_ckpt)[0], group)


@pytest.mark.parametrize("group", ["tables", "dense"])
def test_frozen_parameters_stay_and_the_rest_train(tiny_store, dlrm_ckpt, group, monkeypatch):
    before = load_trained(dlrm_ckpt)[0].state_dict()
    trained = {}
    original = epoch_overfit.Trainer.fit

    def keep(self, *args, **kwargs):  # the trained model itself, to compare with the file
        result = original(self, *args, **kwargs)
        trained.update({k: v.clone() for k, v in self.model.state_dict().items()})
        return result

    monkeypatch.setattr(epoch_overfit.Trainer, "fit", keep)
    cfg = TrainConfig(**RECIPE)
    run = epoch_overfit.continue_training(load_trained(dlrm_ckpt)[0], tiny_store, cfg, group, epochs=2, lr_scale=0.5)
    assert len(run["val_logloss"]) == 3 and all(0 < v < 5 for v in run["val_logloss"])
    tables = _tables(load_trained(dlrm_ckpt)[0])
    for name, value in trained.items():
        frozen = (name in tables) == (group == "tables")
        assert torch.equal(value, before[name]) == frozen, name
    assert run["frozen_params"] > 0 and run["trainable_params"] > 0
    # the test log loss is taken where validation says to stop
    if run["val_logloss"][0] <= min(run["val_logloss"][1:]):
        assert run["test_logloss_best"] == run["test_logloss_start"]
    else:
        assert run["test_logloss_best"] != run["test_logloss_start"]


def test_main_uses_the_saved_recipe_and_writes_json(tiny_store, dlrm_ckpt, tmp_path, capsys):
    out = tmp_path / "eo.json"
    report = epoch_overfit.main(["--data", str(tiny_store.dir), str(dlrm_ckpt), "--freeze", "none,dense", "--epochs", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert [r["group"] for r in report["runs"]] == ["none", "dense"] and all(len(r["val_logloss"]) == 2 for r in report["runs"])
    assert report["config"]["embedding_weight_decay"] == 1e-3 and report["config"]["batch_size"] == 64
    # every run starts from the same weights
    assert report["runs"][0]["val_logloss"][0] == report["runs"][1]["val_logloss"][0]
    assert "+1 epoch" in capsys.readouterr().out


def test_a_bad_group_is_one_clear_line_before_any_training(tiny_store, dlrm_ckpt, tmp_path):
    out = tmp_path / "eo.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tiny_store.dir), str(dlrm_ckpt), "--freeze", "none,mlp", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown group 'mlp'" in r.stderr and not out.exists()


def test_every_group_is_checked_before_the_first_run_trains(tiny_store, dlrm_ckpt, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(epoch_overfit, "continue_training", lambda *a, **k: ran.append(a[3]))
    with pytest.raises(ConfigError, match="matches no parameter"):
        epoch_overfit.main(["--data", str(tiny_store.dir), str(dlrm_ckpt), "--freeze", "none,re:nothing_like_this", "--out", str(tmp_path / "eo.json")])
    assert ran == []


def test_a_bad_config_file_is_one_clear_line(tiny_store, dlrm_ckpt, tmp_path):
    bad = tmp_path / "final.yaml"
    bad.write_text("lr: 0.003\nbatch_sise: 64\n")
    r = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tiny_store.dir), str(dlrm_ckpt), "--config", str(bad), "--out", str(tmp_path / "eo.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "batch_sise" in r.stderr
    r = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tiny_store.dir), str(dlrm_ckpt), "--config", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "missing.yaml" in r.stderr


@pytest.mark.parametrize("freeze", ["", ","])
def test_no_group_at_all_is_refused_not_an_empty_table(tiny_store, dlrm_ckpt, tmp_path, capsys, freeze):
    """--freeze '' (or ',') printed a table of no rows and wrote a JSON of no runs."""
    out = tmp_path / "eo.json"
    with pytest.raises(SystemExit) as exc:
        epoch_overfit.main(["--data", str(tiny_store.dir), str(dlrm_ckpt), "--freeze", freeze, "--out", str(out)])
    assert exc.value.code == 2 and "--freeze" in capsys.readouterr().err and not out.exists()
