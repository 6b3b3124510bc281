"""Training the embedding tables alone after a model stops (recnas.train.tables, `table_finetune` in the job)."""

import pytest
import torch

from recnas.baselines import build_baseline
from recnas.errors import ConfigError
from recnas.search.job import load_job_config
from recnas.search.pipeline import run_job
from recnas.train import TrainConfig, load_trained
from recnas.train.tables import TableFinetune, freeze_all_but_tables, table_phase_config, weights_digest
from recnas.train.trainer import embedding_param_ids
from tests.conftest import diverge_where


def test_the_phase_keeps_the_recipe_and_scales_its_rates():
    recipe = TrainConfig(lr=3e-3, embedding_lr=1e-2, embedding_weight_decay=1e-3, batch_size=512, epochs=6, warmup_steps=50,
                         early_stopping_patience=2, eval_every=100, max_steps=900, seed=4, lr_schedule="constant", restore_best=False)
    phase = table_phase_config(recipe, TableFinetune(epochs=3, lr_scale=0.5))
    assert phase.lr == pytest.approx(1.5e-3) and phase.embedding_lr == pytest.approx(5e-3)
    assert (phase.epochs, phase.max_steps, phase.warmup_steps, phase.lr_schedule) == (3, None, 0, "cosine")
    assert (phase.eval_every, phase.early_stopping_patience, phase.restore_best) == (None, None, True)
    assert (phase.batch_size, phase.embedding_weight_decay, phase.seed, phase.optimizer) == (512, 1e-3, 4, recipe.optimizer)
    assert table_phase_config(TrainConfig(lr=2e-3), TableFinetune()).embedding_lr is None


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr_scale": 0}, {"lr_scale": 1.5}, {"epoch": 2}])
def test_bad_phase_settings_are_clear_config_errors(bad):
    with pytest.raises(ConfigError, match="table_finetune"):
        load_job_config("smoke", table_finetune=bad)


def test_only_the_tables_stay_trainable(tiny_store):
    model = build_baseline("dlrm", tiny_store.meta)
    tables = embedding_param_ids(model)
    n = freeze_all_but_tables(model)
    assert n == sum(p.numel() for p in model.parameters() if id(p) in tables) > 0
    assert all(p.requires_grad == (id(p) in tables) for p in model.parameters())
    with pytest.raises(ValueError, match="no embedding tables"):
        freeze_all_but_tables(torch.nn.Linear(3, 1))


def test_the_digest_follows_the_weights(tiny_store):
    torch.manual_seed(0)
    a = build_baseline("dlrm", tiny_store.meta)
    torch.manual_seed(0)
    b = build_baseline("dlrm", tiny_store.meta)
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3
    assert weights_digest(a) != weights_digest(b)


def test_job_trains_every_model_s_tables_alone_and_keeps_the_better(tmp_path):
    cfg = load_job_config("smoke", baselines=["dlrm"], table_finetune={"epochs": 2, "lr_scale": 0.5})
    out = tmp_path / "run"
    report = run_job(cfg, out, progress=False)
    rows = {r["model"]: r for r in report["models"]}
    for name, folder in (("recnas (searched)", out / "finalists" / report["finalists"][0]["key"]), ("dlrm", out / "baselines" / "dlrm")):
        record = rows[name]["table_finetune"]
        assert record["kept"] == (record["val_after"] < record["val_before"])
        assert rows[name]["tables_alone"] == f"{record['val_after'] - record['val_before']:+.4f}, " + ("kept" if record["kept"] else "not kept")
        assert f"| {rows[name]['tables_alone']} |" in (out / "results.md").read_text()
        phases = list(folder.glob("tables-*"))
        assert len(phases) == 1 and (phases[0] / "model.pt").exists()
        first, _, first_extra = load_trained(folder / "model.pt")
        # the row's train time is the model's and its table phase's together
        assert record["train_seconds"] > 0
        assert rows[name]["train_seconds"] == pytest.approx(first_extra["metrics"]["train_seconds"] + record["train_seconds"])
        tuned, _, extra = load_trained(phases[0] / "model.pt")
        assert extra["config"]["lr"] == pytest.approx(cfg.final.lr * 0.5) and extra["config"]["epochs"] == 2
        # the phase changed the tables and nothing else
        tables = {n for n, p in tuned.named_parameters() if id(p) in embedding_param_ids(tuned)}
        before, after = first.state_dict(), tuned.state_dict()
        assert tables and any(not torch.equal(before[n], after[n]) for n in tables)
        assert all(torch.equal(before[n], after[n]) for n in after if n not in tables)
        assert phases[0].name == f"tables-{weights_digest(first)}"
    # best/ holds the model the table reports: the tuned one when it was kept
    record = rows["recnas (searched)"]["table_finetune"]
    key = report["finalists"][0]["key"]
    source = next((out / "finalists" / key).glob("tables-*")) if record["kept"] else out / "finalists" / key
    assert (out / "best" / "model.pt").read_bytes() == (source / "model.pt").read_bytes()
    # a re-run trains nothing again and reports the same
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("model.pt")}
    again = run_job(cfg, out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.pt") if p.parent.name != "best"} == {p: s for p, s in stamps.items() if p.parent.name != "best"}
    assert [r["test_logloss"] for r in again["models"]] == [r["test_logloss"] for r in report["models"]]


def test_every_grid_point_gets_its_own_phase_also_in_codesign(tmp_path):
    """With a final_grid each point's model has a phase of its own (named by that model's weights),
    and the point stands for the better of its two models; a co-design job runs it too."""
    cfg = load_job_config("smoke", hardware="pim", objective={"kind": "pareto"}, baselines=["lr"], final_grid={"lr": [1e-2, 3e-2]}, table_finetune={"epochs": 1})
    out = tmp_path / "run"
    report = run_job(cfg, out, progress=False)
    for folder in (out / "finalists" / report["finalists"][0]["key"], out / "baselines" / "lr"):
        phases = sorted(p.parent.parent.name for p in folder.glob("*/tables-*/model.pt"))
        assert phases == ["lr=0.01", "lr=0.03"]
        digests = {p.name for p in folder.glob("*/tables-*")}
        assert len(digests) == 2  # two models, two starting points
    for row in report["models"]:
        assert row["final_choice"] in ("lr=0.01", "lr=0.03") and row["table_finetune"]["val_after"] > 0
        # the point's validation log loss is the better of the two, before or after the phase
        kept_point = next(g for g in row["grid"] if g["point"] == row["final_choice"])
        t = row["table_finetune"]
        assert kept_point["val_logloss"] == min(t["val_before"], t["val_after"])


@pytest.mark.parametrize("grid", [None, {"lr": [0.003, 0.01]}])
def test_a_table_phase_that_diverges_leaves_the_model_from_before_it(tiny_store, tmp_path, monkeypatch, grid):
    """The phase only replaces a model that it makes validate lower: one that diverged ended the
    whole job (a baseline's) or left out the whole finalist, whose model from before it stood."""
    import io
    import math

    from rich.console import Console

    from recnas.search.fitting import baseline_builder, fit_selected, selection_fields, warn_diverged_points

    diverge_where(monkeypatch, lambda t, _: t.out_dir is not None and t.out_dir.name.startswith("tables-"))
    cfg = load_job_config("smoke", table_finetune={"epochs": 1, "lr_scale": 0.5}, **({"final_grid": grid} if grid else {}))
    got = fit_selected(baseline_builder("lr", tiny_store.meta, {}), cfg, tiny_store, tmp_path / "a", False, "cpu", validate=False)
    folder = got["folder"]
    assert folder.parent == tmp_path / "a" if grid else folder == tmp_path / "a"
    assert (folder / "model.pt").exists() and math.isfinite(got["val_logloss"])
    record = got["fit"]["table_finetune"]
    error = f"{folder / ('tables-' + weights_digest(got['model']))}: training diverged: loss nan at step 9; lower lr or set grad_clip"
    assert record["diverged"] == error and not record["kept"] and record["val_before"] == got["val_logloss"]
    assert math.isfinite(got["fit"]["train_seconds"])
    assert selection_fields(got)["tables_alone"] == "diverged, not kept"
    out = io.StringIO()
    warn_diverged_points(got, Console(file=out, width=1000))
    warned = out.getvalue().splitlines()
    assert len(warned) == len(grid["lr"]) if grid else len(warned) == 1
    assert warned[0].startswith(f"warning: {tmp_path / 'a'}") and "table_finetune phase" in warned[0] and "the model from before it stands" in warned[0]
    assert any(error in w for w in warned)


def test_a_job_whose_table_phases_diverge_reports_the_models_from_before_them(tmp_path, monkeypatch, capsys):
    import json

    diverge_where(monkeypatch, lambda t, _: t.out_dir is not None and t.out_dir.name.startswith("tables-"))
    out = tmp_path / "run"
    report = run_job(load_job_config("smoke", baselines=["lr"], table_finetune={"epochs": 1, "lr_scale": 0.5}), out, progress=False)
    printed = " ".join(capsys.readouterr().out.split())
    assert printed.count("(the table_finetune phase not kept: the model from before it stands)") == 2
    assert [r["tables_alone"] for r in report["models"]] == ["diverged, not kept"] * 2
    key = report["finalists"][0]["key"]
    assert (out / "best" / "model.pt").read_bytes() == (out / "finalists" / key / "model.pt").read_bytes()
    saved = json.loads((out / "results.json").read_text())
    assert all(m["table_finetune"]["diverged"].endswith("training diverged: loss nan at step 9; lower lr or set grad_clip") for m in saved["models"])
    assert "| diverged, not kept |" in (out / "results.md").read_text()
