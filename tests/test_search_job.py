"""The main job end to end at the smoke budget (seconds on a CPU)."""

import io
import json
import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from recnas.search.job import check_same_run, decays_every_table, dump_config, load_job_config
from recnas.search.pipeline import run_job
from recnas.errors import ConfigError, DataError
from recnas.train.config import TrainConfig
from recnas.space import Architecture
from tests.conftest import locked_elsewhere, make_tiny_store

CONFIGS = Path(__file__).parents[1] / "configs"  # the job configs the README and benchmarks point at

ARTIFACTS = ["results.md", "results.json", "best_arch.json", "space.yaml", "search.sqlite", "search_progress.png", "score_vs_cost.png", "config.yaml", "best/model.pt", "supernet/model.pt"]


def test_smoke_search_produces_every_artifact_and_resumes(tmp_path):
    cfg = load_job_config("smoke")
    out = tmp_path / "run"
    report = run_job(cfg, out, progress=False)
    for name in ARTIFACTS:
        assert (out / name).exists(), name
    names = [m["model"] for m in report["models"]]
    assert names == ["recnas (searched)", "lr", "dlrm"]
    assert report["bayes"]["test_logloss"] > 0
    for m in report["models"]:  # the gap is the test log loss above the Bayes floor, not below it
        assert 0 < m["test_logloss"] < 1 and m["flops"] > 0
        assert m["gap_to_bayes"] == pytest.approx(m["test_logloss"] - report["bayes"]["test_logloss"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["best_arch"] == report["best_arch"]
    assert "| recnas (searched) |" in (out / "results.md").read_text()
    # a second run reuses every stage: nothing is evaluated again, and it says what it found
    import io

    from rich.console import Console

    log = io.StringIO()
    again = run_job(cfg, out, progress=False, console=Console(file=log, width=300))
    assert again["search"]["evaluated_this_run"] == 0
    assert again["best_arch"] == report["best_arch"]
    assert "sampler=single-op-any-conn (trained earlier in this run folder)" in log.getvalue()
    (out / "supernet" / "model.pt").unlink()  # as if killed between its last checkpoint and model.pt
    log = io.StringIO()
    assert run_job(cfg, out, progress=False, console=Console(file=log, width=300))["best_arch"] == report["best_arch"]
    assert "(begun earlier in this run folder: going on from its checkpoint)" in log.getvalue()


def test_a_rerun_removes_what_hard_killed_writes_left(tmp_path):
    """SIGKILL mid-write leaves an atomic write's temp file (a half checkpoint) or copy_dir's
    staging folder: the re-run removes them, and best/ never carries one as the winner's."""
    cfg = load_job_config("smoke")
    out = tmp_path / "run"
    run_job(cfg, out, progress=False)
    winner = next((out / "finalists").iterdir())
    stale = [out / "supernet" / ".checkpoint.pt.tmp-0123abcd", winner / ".checkpoint.pt.tmp-89abcdef", out / ".results.json.tmp-00ff00ff"]
    for p in stale:
        p.write_bytes(b"half")
    (out / ".best.tmp-12345678").mkdir()
    (out / ".best.tmp-12345678" / "model.pt").write_bytes(b"half")
    kept = [out / ".notes.tmp-mine", out / ".model.pt.old-0123abcd"]  # not names a write of ours makes
    for p in kept:
        p.write_text("mine")
    shutil.rmtree(out / "best")  # as if killed before best/ was copied
    again = run_job(cfg, out, progress=False)
    assert again["search"]["evaluated_this_run"] == 0
    assert not any(p.exists() for p in [*stale, out / ".best.tmp-12345678"])
    assert all(p.read_text() == "mine" for p in kept)
    assert sorted(p.name for p in (out / "best").iterdir()) == sorted(p.name for p in winner.iterdir())


def test_gpu_sized_settings_on_a_machine_without_cuda_warn(tmp_path, monkeypatch):
    """`--budget gpu` on a CPU-only machine runs (for hours): the user is told at the start."""
    import io

    from rich.console import Console

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_job_config("smoke", baselines=["lr"], supernet={"resident_data": True, "device": "auto"})
    log = io.StringIO()
    report = run_job(cfg, tmp_path / "run", progress=False, console=Console(file=log, width=1000))
    assert "sized for a GPU" in log.getvalue() and "--budget cpu" in log.getvalue()
    assert report["models"][0]["test_logloss"] > 0  # a warning, not a refusal
    # a job told to run on the CPU is where it was asked to be: no warning
    cfg = load_job_config("smoke", baselines=["lr"], supernet={"resident_data": True, "device": "cpu"})
    log = io.StringIO()
    run_job(cfg, tmp_path / "cpu", progress=False, console=Console(file=log, width=1000))
    assert "sized for a GPU" not in log.getvalue()


def test_best_arch_retrains_from_the_cli_in_the_space_of_its_run(tmp_path, monkeypatch, capsys):
    """The search's space (a preset plus overrides) is not a preset: `--space <run>/space.yaml`
    rebuilds the architecture as found; a preset name is refused, not silently another model."""
    from tests.test_cli_models import TINY, error_line, run

    cfg = load_job_config("smoke", baselines=["lr"])
    out = tmp_path / "run"
    run_job(cfg, out, progress=False)
    data = tmp_path / "data" / f"synthetic-{cfg.synthetic_rows}-seed{cfg.seed}"
    common = ["subnet", "train", "--data", data, "--arch", out / "best_arch.json", "--config", TINY, "--steps", 2]
    code, _, err = run(monkeypatch, capsys, *common, "--space", out / "space.yaml", "--out", tmp_path / "re")
    assert code == 0, err
    spec = torch.load(tmp_path / "re" / "model.pt", weights_only=False)["model_spec"]
    assert spec["space"] == torch.load(out / "best" / "model.pt", weights_only=False)["model_spec"]["space"]
    code, _, err = run(monkeypatch, capsys, *common, "--space", "full", "--out", tmp_path / "preset")
    assert code == 2 and "blocks" in error_line(err)


def _losses(report):
    return {m["model"]: m["test_logloss"] for m in report["models"]}


def test_same_seed_same_result_whatever_ran_before(tmp_path):
    """Every model is built right after seeding: the process's RNG state before the job (here
    disturbed on purpose) must not change the supernet, the winner or any result."""
    cfg = load_job_config("smoke")
    reports = []
    for i, disturb in enumerate((1, 2)):
        torch.manual_seed(disturb)
        reports.append(run_job(cfg, tmp_path / f"run{i}", progress=False))
    supernets = [torch.load(tmp_path / f"run{i}" / "supernet" / "model.pt", weights_only=False)["model"] for i in (0, 1)]
    assert all(torch.equal(supernets[0][k], supernets[1][k]) for k in supernets[0])
    assert reports[0]["best_arch"] == reports[1]["best_arch"]
    assert _losses(reports[0]) == _losses(reports[1])


def test_job_seed_seeds_every_stage_unless_a_section_sets_its_own(tmp_path):
    """`--seed` used to reach only the data and the path sampler: on a prepared store two seeds
    trained the same baselines and evolved the same candidates. Now it seeds every stage."""
    cfg = load_job_config("smoke", seed=7)
    assert (cfg.supernet.seed, cfg.finetune.seed, cfg.evolution.seed, cfg.final.seed) == (7, 7, 7, 7)
    own = tmp_path / "own.yaml"
    own.write_text("evolution: {seed: 1}\nfinal: {seed: 2, epochs: 1}\nfinetune: null\n")
    cfg = load_job_config("smoke", own, seed=7)
    assert (cfg.supernet.seed, cfg.evolution.seed, cfg.final.seed, cfg.final.epochs, cfg.finetune) == (7, 1, 2, 1, None)
    assert load_job_config("smoke").final.seed == 0  # seed 0 as before


@pytest.mark.parametrize("section", ["supernet", "evolution", "final"])
def test_a_section_given_as_null_is_refused_not_the_library_defaults(tmp_path, section):
    """`evolution:` with nothing under it (YAML null) used to drop the preset's section for the
    library's defaults without a word: `--budget smoke` then evolved 128 for 240 generations."""
    bad = tmp_path / "null.yaml"
    bad.write_text(f"{section}:\n")
    with pytest.raises(ConfigError, match=f"key '{section}': Input should be a valid dictionary"):
        load_job_config("smoke", bad)
    bad.write_text("finetune:\n")  # null here is no fine-tune, as before
    assert load_job_config("smoke", bad, seed=3).finetune is None


@pytest.mark.parametrize("over, where", [
    ({"finetune": {"inplace_distill": 0.5}}, "finetune"),
    ({"final": {"inplace_distill": 0.5}}, "final"),
    ({"final_grid": {"inplace_distill": [0.0, 0.5]}}, "final at inplace_distill=0.5"),
    ({"scoring": "scratch", "proxy": {"inplace_distill": 0.5}}, "proxy"),
])
def test_inplace_distill_outside_the_supernet_is_refused_at_load(over, where):
    """Only a supernet has a largest path to distil from: the Trainer refused it in `final` after
    the supernet and the search, and in `finetune` at the first candidate, after which the run
    folder could not be continued with the setting fixed ("other settings")."""
    with pytest.raises(ConfigError, match=f"inplace_distill is set in {where}, which train plain models"):
        load_job_config("smoke", **over)
    assert load_job_config("smoke", supernet={"inplace_distill": 0.5}).supernet.inplace_distill == 0.5  # where it belongs


def test_a_baseline_named_twice_is_refused():
    """It trained in one folder and was listed twice in the results table."""
    with pytest.raises(ConfigError, match=r"key 'baselines': lr given more than once"):
        load_job_config("smoke", baselines=["lr", "dlrm", "lr"])


def test_two_seeds_on_one_prepared_store_train_different_baselines(tmp_path):
    from recnas.data.synthetic import generate

    data = tmp_path / "data"
    generate(data, rows=3000, seed=0)
    over = dict(data=str(data), baselines=["lr"], evolution=dict(population=4, sample_size=2, children=1, generations=1))
    reports = [run_job(load_job_config("smoke", seed=s, **over), tmp_path / f"s{s}", progress=False) for s in (0, 1)]
    lr = [next(m for m in r["models"] if m["model"] == "lr")["test_logloss"] for r in reports]
    assert lr[0] != lr[1]  # the same model, data and recipe: only the training seed differs


def test_resumed_job_trains_the_same_baseline(tmp_path):
    """A job interrupted before a baseline and re-run trains it exactly as an uninterrupted one."""
    cfg = load_job_config("smoke")
    out = tmp_path / "run"
    first = run_job(cfg, out, progress=False)
    shutil.rmtree(out / "baselines" / "dlrm")  # as if stopped before this stage
    again = run_job(cfg, out, progress=False)
    assert again["search"]["evaluated_this_run"] == 0
    assert _losses(again)["dlrm"] == _losses(first)["dlrm"]


def test_codesign_smoke_search_reports_pim_costs(tmp_path):
    cfg = load_job_config("smoke", hardware="pim", objective={"kind": "pareto"}, baselines=["dlrm"])
    report = run_job(cfg, tmp_path / "run", progress=False)
    assert report["best_hardware"] is not None
    for m in report["models"]:
        assert m["energy"] > 0 and m["latency_seq"] > 0
        # quality on its own PIM configuration: simulated quantisation moves the log loss
        assert 0 < m["test_logloss_pim"] < 10 and m["test_logloss_pim"] != m["test_logloss"]
    out = tmp_path / "run"
    assert "test log loss on its PIM config" in (out / "results.md").read_text()
    assert (out / "pareto.png").exists() and "| candidate |" in (out / "pareto.md").read_text()
    front = json.loads((out / "pareto.json").read_text())
    assert front and all(r["hardware"] for r in front)
    for a in front:  # nothing on the front is dominated by another front member
        assert not any(b["logloss"] <= a["logloss"] and b["energy"] <= a["energy"] and b["latency"] <= a["latency"] and b["flops"] <= a["flops"] and b != a and (b["logloss"], b["energy"], b["latency"], b["flops"]) != (a["logloss"], a["energy"], a["latency"], a["flops"]) for b in front)


def test_evaluate_with_the_run_s_pim_config_gives_the_results_pim_log_loss(tmp_path):
    """results.md's "test log loss on its PIM config" had no command to reproduce it (or to
    write predictions at it): `recnas evaluate --pim-config best_hardware.json` gives it, and
    without the flag the full-precision one."""
    from typer.testing import CliRunner

    from recnas.cli import app

    cfg = load_job_config("smoke", hardware="pim", objective={"kind": "pareto"}, baselines=["lr"])
    out = tmp_path / "run"
    report = run_job(cfg, out, progress=False)
    searched = report["models"][0]
    data = out.parent / "data" / f"synthetic-{cfg.synthetic_rows}-seed{cfg.seed}"
    runner = CliRunner()
    args = ["evaluate", "--ckpt", str(out / "best" / "model.pt"), "--data", str(data), "--device", "cpu"]
    res = runner.invoke(app, [*args, "--pim-config", str(out / "best_hardware.json"), "--json-out", str(tmp_path / "pim.json")])
    assert res.exit_code == 0, res.output
    assert "on the PIM config of" in res.output
    record = json.loads((tmp_path / "pim.json").read_text())
    assert record["logloss"] == pytest.approx(searched["test_logloss_pim"], abs=1e-6)
    assert record["pim_config"] == json.loads((out / "best_hardware.json").read_text())
    res = runner.invoke(app, [*args, "--json-out", str(tmp_path / "full.json")])
    full = json.loads((tmp_path / "full.json").read_text())
    assert full["logloss"] == pytest.approx(searched["test_logloss"], abs=1e-6) and full["pim_config"] is None
    assert full["logloss"] != record["logloss"]
    (tmp_path / "bad.json").write_text('{"weight_bits": 0}')
    res = runner.invoke(app, [*args, "--pim-config", str(tmp_path / "bad.json")])
    assert isinstance(res.exception, ConfigError) and "weight_bits" in str(res.exception) and "bad.json" in str(res.exception)


def test_codesign_searches_only_the_allowed_pim_values(tmp_path):
    cfg = load_job_config("smoke", hardware="pim", objective={"kind": "pareto"}, baselines=["lr"], pim_choices={"weight_bits": [8], "act_bits": [8]},
                          evolution=dict(population=6, sample_size=3, children=4, generations=3, hardware_mutation_prob=0.9))
    run_job(cfg, tmp_path / "run", progress=False)
    db = sqlite3.connect(tmp_path / "run" / "search.sqlite")
    configs = [json.loads(h) for (h,) in db.execute("SELECT hardware FROM candidates")]
    assert len(configs) >= 10 and all(c["weight_bits"] == 8 and c["act_bits"] == 8 for c in configs)
    assert len({(c["xbar_size"], c["adc_bits"], c["replication"], c["cell_bits"]) for c in configs}) > 1


def test_pim_choices_without_hardware_pim_are_a_config_error():
    """No PIM configuration is searched without hardware: pim: the restriction was ignored."""
    with pytest.raises(ConfigError, match=r"pim_choices \{'weight_bits': \[8\]\} restrict the searched PIM configuration: they need hardware: pim"):
        load_job_config("smoke", pim_choices={"weight_bits": [8]})
    load_job_config("smoke", hardware="pim", pim_choices={"weight_bits": [8]})


def test_pim_choices_in_another_order_continue_the_same_run(tmp_path):
    """The search reads them sorted and once each: the same values in another order (or repeated)
    are the same run, not "other settings"."""
    first = load_job_config("smoke", hardware="pim", pim_choices={"weight_bits": [8, 4], "adc_bits": [6, 8, 6]})
    assert first.pim_choices == {"weight_bits": [4, 8], "adc_bits": [6, 8]}
    dump_config(first, tmp_path / "config.yaml")
    check_same_run(load_job_config("smoke", hardware="pim", pim_choices={"adc_bits": [8, 6], "weight_bits": [4, 8]}), tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="pim_choices"):
        check_same_run(load_job_config("smoke", hardware="pim", pim_choices={"weight_bits": [8]}), tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match=r"key 'pim_choices': xbar_size: values must be a non-empty subset of \[64, 128, 256\], got \[7\]"):
        load_job_config("smoke", hardware="pim", pim_choices={"xbar_size": [7]})  # named once ("pim_choices.xbar_size" after it too)


def test_codesign_finalists_are_distinct_architectures(tmp_path):
    """The same architecture on several PIM configs is one finalist (its best-scored config)."""
    cfg = load_job_config("smoke", hardware="pim", objective={"kind": "pareto"}, baselines=["lr"], finalists=3,
                          evolution=dict(population=6, sample_size=3, children=4, generations=4, hardware_mutation_prob=0.9))
    report = run_job(cfg, tmp_path / "run", progress=False)
    fin = report["finalists"]
    archs = [f["key"].split("-")[0] for f in fin]
    assert len(fin) == 3 and len(set(archs)) == 3
    db = sqlite3.connect(tmp_path / "run" / "search.sqlite")
    keys = [k for (k,) in db.execute("SELECT key FROM candidates")]
    assert len({k.split("-")[0] for k in keys}) < len(keys)  # the search did try one arch on several configs


def test_bad_job_configs_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("evolution:\n  population: 4\n  sampel_size: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'evolution.sampel_size'.*sample_size"):
        load_job_config("smoke", bad)
    with pytest.raises(ConfigError, match="unknown budget"):
        load_job_config("huge")
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_job_config("smoke", bad)


def test_cli_search_reports_errors_in_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("objective:\n  kind: fastest\n")
    r = subprocess.run([sys.executable, "-m", "recnas", "search", "--budget", "smoke", "--config", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "objective.kind" in r.stderr and "Traceback" not in r.stderr


def test_a_second_job_on_a_busy_run_folder_is_refused(tmp_path):
    """`recnas search` twice on one --out: the second is refused before it writes anything."""
    out = tmp_path / "o"
    with locked_elsewhere(out):
        with pytest.raises(ConfigError, match="is being written by another recnas run"):
            run_job(load_job_config("smoke"), out, progress=False)
    assert not out.exists()


def test_search_with_searched_embedding_widths(tmp_path):
    widths = [2, 4, 8, 8] * 6 + [2, 4]  # 26 fields, as in the synthetic data
    cfg = load_job_config("smoke", emb_dims=widths, baselines=[])
    report = run_job(cfg, tmp_path / "run", progress=False)
    assert report["best_arch"]["emb_dims"] == widths
    row = report["models"][0]
    assert row["embedding_params"] < 8722 * 8  # compact per-field tables, not the full-width table
    with pytest.raises(ConfigError, match="emb_dims"):
        run_job(load_job_config("smoke", emb_dims=[2, 4], baselines=[]), tmp_path / "bad", progress=False)


def test_finalists_are_retrained_and_the_best_on_validation_wins(tmp_path):
    cfg = load_job_config("smoke", finalists=3, baselines=["lr"])
    out = tmp_path / "run"
    report = run_job(cfg, out, progress=False)
    fin = report["finalists"]
    assert len(fin) == 3 and len({f["key"] for f in fin}) == 3
    assert [f["search_score"] for f in fin] == sorted(f["search_score"] for f in fin)  # the search's top 3, in order
    chosen = [f for f in fin if f["chosen"]]
    assert len(chosen) == 1 and chosen[0]["val_logloss"] == min(f["val_logloss"] for f in fin)
    for f in fin:
        assert (out / "finalists" / f["key"] / "model.pt").exists()
    # the chosen one is the result: its architecture and weights
    assert Architecture.load(out / "best_arch.json").hash == chosen[0]["key"]
    assert (out / "best" / "model.pt").read_bytes() == (out / "finalists" / chosen[0]["key"] / "model.pt").read_bytes()


@pytest.mark.parametrize("name", ["search-gpu-1m.yaml", "search-gpu-1m-scratch.yaml", "codesign-gpu-1m.yaml"])
def test_shipped_job_configs_load(name):
    """The configs the README and benchmarks point at stay valid as the schema changes."""
    from recnas.hardware import pim_choices
    from recnas.space import get_space

    cfg = load_job_config("gpu", CONFIGS / name)
    space = get_space(cfg.space, **cfg.space_overrides)
    assert space.n_blocks == 3 and cfg.finalists == 3 and cfg.synthetic_rows == 1_000_000
    if name.startswith("codesign"):
        assert pim_choices(cfg.pim_choices)["act_bits"] == (8,)
    assert (cfg.scoring == "scratch") == ("scratch" in name)
    # only the scratch config has the CIN head, and with table decay, without which it overfits (docs/search.md)
    assert space.cin_head == ((64, 64) if "scratch" in name else ())
    if space.cin_head:
        assert decays_every_table(cfg)


def test_shipped_cpu_config_changes_only_the_final_recipe_finalists_table_phase_and_head(tmp_path):
    """configs/search-cpu-decay.yaml stays valid and searches the preset's space: its one change
    to the space is the CIN head, which candidates are scored without (docs/search.md)."""
    from recnas.space import get_space

    preset = load_job_config("cpu")
    cfg = load_job_config("cpu", CONFIGS / "search-cpu-decay.yaml")
    assert cfg.final.embedding_weight_decay == 1e-3 and preset.final.embedding_weight_decay is None
    assert cfg.finalists == 6 and cfg.final.epochs == preset.final.epochs
    assert cfg.table_finetune is not None and (cfg.table_finetune.epochs, cfg.table_finetune.lr_scale) == (2, 0.25) and preset.table_finetune is None
    space, preset_space = get_space(cfg.space, **cfg.space_overrides), get_space(preset.space, **preset.space_overrides)
    assert space.cin_head == (16, 16) and space.blocks_only() == preset_space and decays_every_table(cfg)
    dump_config(preset, tmp_path / "config.yaml")
    # the head is part of a run's identity (candidates' costs include it): not the preset's run folder
    with pytest.raises(ConfigError, match="space_overrides"):
        check_same_run(cfg, tmp_path / "config.yaml")
    check_same_run(cfg.model_copy(update={"space_overrides": preset.space_overrides}), tmp_path / "config.yaml")


def test_cost_targets_relative_to_a_baseline(tmp_path):
    """`reference` + `ratios`: the targets are the baseline's own costs (its PIM costs on the
    default configuration, as in the results table) divided by the ratios."""
    ratios = {"flops": 2.0, "energy": 1.8, "latency": 1.5}
    cfg = load_job_config("smoke", hardware="pim", baselines=["dlrm"], objective={"kind": "penalized", "reference": "dlrm", "ratios": ratios, "beta": 1.0})
    report = run_job(cfg, tmp_path / "run", progress=False)
    dlrm = next(m for m in report["models"] if m["model"] == "dlrm")
    targets = report["objective"]["targets"]
    assert targets == pytest.approx({k: dlrm[k] / r for k, r in ratios.items()})
    from recnas.search.objective import Objective

    objective = Objective.model_validate(report["objective"])
    assert objective.score({"logloss": 0.5, "flops": 3 * targets["flops"], "energy": 0.0, "latency": 0.0}) == pytest.approx(0.5 + 2.0)


def test_a_reference_without_the_cost_is_refused_before_any_training(tmp_path):
    """lr has no FLOPs on data without numeric features: the target lr.flops / 2 was 0, which the
    score skips, so the search ran on log loss alone after printing "targets: flops 0"."""
    from tests.conftest import make_tiny_store

    store = make_tiny_store(tmp_path / "data", n_dense=0)
    cfg = load_job_config("smoke", data=str(store.dir), baselines=["lr"], objective={"kind": "penalized", "reference": "lr", "ratios": {"flops": 2, "params": 2}})
    with pytest.raises(ConfigError, match=r"objective.reference lr has no flops on this dataset \(flops 0\), so no target can be derived"):
        run_job(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "supernet").exists()  # refused before the supernet trained
    explicit = cfg.model_copy(update={"objective": cfg.objective.model_copy(update={"targets": {"flops": 100.0}})})
    from recnas.search.objective import resolve_targets

    assert resolve_targets(explicit.objective, store.meta).targets == {"flops": 100.0, "params": pytest.approx(0.5)}  # lr: one bias


@pytest.mark.parametrize("objective, hardware, match", [
    ({"kind": "penalized", "reference": "dlrm", "ratios": {"energy": 1.8}}, "none", "need hardware: pim"),
    ({"kind": "pareto"}, "none", r"costs \['energy', 'latency'\] are PIM costs: they need hardware: pim; or set objective.pareto_costs"),  # counted as 0 before
    ({"kind": "pareto", "pareto_costs": ["energy"]}, "none", r"costs \['energy'\] are PIM costs"),  # ranked on log loss alone before
    ({"kind": "penalized", "reference": "nope", "ratios": {"flops": 2}}, "pim", "reference must be one of"),
    ({"kind": "loss", "reference": "dlrm", "ratios": {"flops": 2}}, "pim", "needs kind: penalized"),
    ({"kind": "penalized", "ratios": {"flops": 2}}, "pim", "need a reference"),
    ({"kind": "penalized", "reference": "dlrm", "ratios": {"flops": -1}}, "pim", "must be positive"),
    ({"kind": "penalized", "reference": "dlrm", "ratios": {"flops": 0}}, "pim", r"ratios must be positive, got \{'flops': 0.0\}"),  # a target of cost / 0
    ({"kind": "penalized", "targets": {"flops": 0}}, "none", r"targets must be positive, got \{'flops': 0.0\}"),  # ignored by the score before
    ({"kind": "penalized", "targets": {"params": -5}}, "none", "targets must be positive"),
    ({"kind": "penalized"}, "none", "kind: penalized needs cost targets"),  # searched on log loss alone before
    ({"kind": "loss", "targets": {"flops": 1000}}, "none", r"cost targets need kind: penalized \(kind loss"),  # ignored before
    ({"kind": "pareto", "targets": {"energy": 10}}, "pim", r"cost targets need kind: penalized \(kind pareto"),  # ignored before
    ({"kind": "pareto", "pareto_costs": []}, "pim", "kind: pareto needs at least one cost in pareto_costs"),  # searched as kind: loss before
    ({"kind": "pareto", "pareto_costs": ["flops", "flops"]}, "none", r"names a cost more than once, got \['flops', 'flops'\]"),
])
def test_bad_reference_targets_are_clear_errors(objective, hardware, match):
    with pytest.raises(ConfigError, match=match):
        load_job_config("smoke", hardware=hardware, objective=objective)


@pytest.mark.parametrize("overrides, match", [
    ({"dense_ops": ["conv"]}, r"key 'dense_ops': dense_ops must be a non-empty subset of .* \(got \['conv'\]\)"),
    ({"n_blokcs": 3}, "unknown key 'n_blokcs'; valid keys: .*n_blocks"),
])
def test_bad_space_overrides_fail_when_the_config_loads(overrides, match):
    """Before any data is generated or prepared, not after, and in the config loader's words."""
    with pytest.raises(ConfigError, match=match):
        load_job_config("smoke", space_overrides=overrides)


def test_a_run_folder_is_not_continued_with_other_settings(tmp_path):
    """Another seed, data or space would mix the stored supernet and scores with new ones."""
    out = tmp_path / "run"
    out.mkdir()
    dump_config(load_job_config("smoke"), out / "config.yaml")
    before = (out / "config.yaml").read_text()
    (out / "results.json").write_text("{}")
    for over, match in (({"seed": 5}, r"seed: 0 -> 5; supernet.seed: 0 -> 5; finetune.seed: 0 -> 5\)"), ({"space": "small"}, r"space: 'full' -> 'small'"), ({"supernet": {"lr": 0.1}}, r"supernet.lr: 0.003 -> 0.1\)")):
        with pytest.raises(ConfigError, match=r"holds a run with other settings \(" + match):
            run_job(load_job_config("smoke", **over), out, progress=False)
    assert (out / "config.yaml").read_text() == before and (out / "results.json").read_text() == "{}"
    check_same_run(load_job_config("smoke", baselines=["lr"], evolution={"generations": 3}, supernet={"device": "cpu", "log_every": 7}), out / "config.yaml")
    (out / "config.yaml").write_text("seed: [")
    with pytest.raises(ConfigError, match="holds a run whose config cannot be read"):
        check_same_run(load_job_config("smoke"), out / "config.yaml")
    TrainConfig(max_steps=5).to_yaml(out / "config.yaml")  # a training run's folder
    with pytest.raises(ConfigError, match=r"holds a training run \(`recnas supernet/subnet/baseline train`\), not a search"):
        check_same_run(load_job_config("smoke"), out / "config.yaml")


def test_search_show_lists_a_store_and_only_reads_other_files(tmp_path, monkeypatch, capsys):
    from recnas.search.results import ResultsStore
    from tests.test_cli_models import error_line, run

    run_dir = tmp_path / "run"
    store = ResultsStore(run_dir / "search.sqlite")
    for i, loss in enumerate((0.52, 0.48, 0.50)):
        store.put(f"k{i}", "{}", {"logloss": loss, "auc": 0.7, "flops": 10, "params": 5})
    store.close()
    code, out, _ = run(monkeypatch, capsys, "search", "show", run_dir, "--top", 2)
    assert code == 0 and "3 candidates evaluated (best 2" in out and out.index("k1") < out.index("k2") and "k0" not in out
    wide = "| recnas (searched) | " + " | ".join(f"{i:,}" for i in range(100_000, 100_020)) + " |"  # wider than any console
    results = f"| model |\n|---|\n| [bold]x[/bold] |\n{wide}\n\n![search progress](search_progress.png)\n"
    (run_dir / "results.md").write_text(results)
    code, out, _ = run(monkeypatch, capsys, "search", "show", run_dir)
    assert code == 0 and out.endswith(results)  # printed as written: no markup taken, no row wrapped
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "search.sqlite").write_bytes(b"")
    code, _, err = run(monkeypatch, capsys, "search", "show", empty)
    assert code == 2 and "not a recnas results database" in error_line(err)
    assert (empty / "search.sqlite").read_bytes() == b""  # no tables were added to it
    with sqlite3.connect(run_dir / "search.sqlite") as db:
        db.execute("UPDATE candidates SET metrics = '{bad' WHERE key = 'k1'")
    code, _, err = run(monkeypatch, capsys, "search", "show", run_dir)
    assert code == 2 and "candidate 'k1' has no readable metrics" in error_line(err)


@pytest.mark.parametrize("over, match", [
    ({"sampler": "zzz"}, r"key 'sampler': unknown sampler 'zzz'; choose one of single-op-any-conn"),
    ({"baselines": ["dlrm", "zzz"]}, r"key 'baselines': unknown baseline 'zzz'; available: lr, dlrm"),
    ({"baseline_hparams": {"zzz": {"a": 1}}}, r"key 'baseline_hparams': unknown baseline 'zzz'"),
    ({"baseline_hparams": {"dlrm": {"zzz": 1}}}, r"key 'baseline_hparams': dlrm hyper-parameters: unknown key 'zzz'; valid keys: embed_dim, bottom_mlp"),
    ({"objective": {"kind": "pareto", "pareto_costs": ["zzz"]}}, r"key 'objective.pareto_costs.0': Input should be 'flops'"),  # counted as 0 before
    ({"evolution": {"sample_size": 10}}, r"evolution.sample_size \(10\) exceeds evolution.population \(6\)"),  # refused after the supernet before
    ({"evolution": {"children": 8}}, r"evolution.children \(8\) exceeds evolution.population \(6\): each generation's children replace its oldest members"),  # ran, killing children unseen
])
def test_names_a_job_uses_late_are_checked_when_the_config_loads(over, match):
    """These used to fail (or be ignored) only after the supernet and the whole search had run."""
    with pytest.raises(ConfigError, match=match):
        load_job_config("smoke", **over)


@pytest.mark.parametrize("emb_dims, match", [([4] * 3, "emb_dims has 3 entries, data has"), ([64] * 26, r"emb_dims must lie in 1..8")])
def test_bad_emb_dims_fail_before_the_run_folder_is_written(tmp_path, emb_dims, match):
    """They used to fail after the supernet, leaving a saved config that blocked every re-run."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=match):
        run_job(load_job_config("smoke", emb_dims=emb_dims), out, progress=False)
    assert not out.exists()


def test_a_baseline_that_cannot_be_built_on_the_data_fails_before_any_training(tmp_path, monkeypatch):
    """dlrm's dot interaction on one categorical field and no dense features used to fail only
    after the supernet, the search and the retrain had run; so did a reference baseline."""
    store = make_tiny_store(tmp_path / "one-field", n_dense=0, vocab_sizes=(7,))
    monkeypatch.setattr("recnas.search.pipeline.fit_or_load", lambda *a, **k: pytest.fail("trained before the baselines were checked"))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"dlrm: the dot interaction needs .* leave it out of `baselines`"):
        run_job(load_job_config("smoke", data=str(store.dir), baselines=["lr", "dlrm"]), out, progress=False)
    reference = {"kind": "penalized", "reference": "dlrm", "ratios": {"flops": 2.0}}
    with pytest.raises(ConfigError, match=r"dlrm: the dot interaction needs .* choose another objective.reference"):
        run_job(load_job_config("smoke", data=str(store.dir), baselines=["lr"], objective=reference), out, progress=False)
    assert not out.exists()


def test_baselines_on_a_store_without_categorical_fields_are_refused_with_advice_that_works(tmp_path, monkeypatch):
    """A store of dense features only: every baseline refuses it, and the error advised "set its
    baseline_hparams in --config", which no hparam can satisfy; it names the way that works."""
    from recnas.data.schema import SPLITS, DatasetMeta
    from recnas.data.store import CTRStore, SplitArrays, write_store

    rng = np.random.default_rng(0)
    splits = {s: SplitArrays(rng.normal(size=(n, 3)).astype(np.float32), np.zeros((n, 0), np.int32), (np.arange(n) % 2).astype(np.float32)) for s, n in zip(SPLITS, (64, 8, 8))}
    write_store(tmp_path / "dense-only", splits, DatasetMeta(name="tiny", dense_names=["I1", "I2", "I3"], cat_names=[], vocab_sizes=[], rows={}, positive_rate={s: 0.5 for s in SPLITS}))
    store = CTRStore(tmp_path / "dense-only")
    monkeypatch.setattr("recnas.search.pipeline.fit_or_load", lambda *a, **k: pytest.fail("trained before the baselines were checked"))
    with pytest.raises(DataError) as exc:
        run_job(load_job_config("smoke", data=str(store.dir), baselines=["lr", "dlrm"]), tmp_path / "run", progress=False)
    message = str(exc.value)
    assert "lr: dataset 'tiny' has no categorical fields" in message and "baseline_hparams" not in message
    assert "leave it out of `baselines` in --config; `baselines: []` runs the search without any" in message
    assert not (tmp_path / "run").exists()


def test_an_out_that_is_a_file_is_refused_before_any_data_is_generated(tmp_path):
    """It used to generate the synthetic data first, then fail with a bare "File exists"."""
    afile = tmp_path / "run"
    afile.write_text("keep")
    with pytest.raises(ConfigError, match=f"--out {afile} exists and is not a directory"):
        run_job(load_job_config("smoke"), afile, progress=False)
    assert afile.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_rerun_that_fails_midway_keeps_the_config_of_the_results(tmp_path):
    """config.yaml used to be rewritten with the new settings before a stage refused them, so it
    no longer described results.json; a re-run that finishes does record its settings."""
    out = tmp_path / "run"
    run_job(load_job_config("smoke", baselines=["lr"]), out, progress=False)
    before = (out / "config.yaml").read_text()
    with pytest.raises(Exception, match="lr: 0.003 -> 0.3"):
        run_job(load_job_config("smoke", baselines=["lr"], final={"lr": 0.3}), out, progress=False)
    assert (out / "config.yaml").read_text() == before
    run_job(load_job_config("smoke", baselines=[]), out, progress=False)
    assert load_job_config("smoke", out / "config.yaml").baselines == []


def test_ray_settings_imply_ray_and_contradict_an_explicit_serial_executor(tmp_path):
    """They used to be silently ignored: the search then ran serially."""
    assert load_job_config("smoke").executor == "serial"
    assert load_job_config("smoke", ray_address="10.0.0.1:6379").executor == "ray"
    yaml_file = tmp_path / "job.yaml"
    yaml_file.write_text("ray_workers: 4\n")
    assert load_job_config("smoke", yaml_file).executor == "ray"
    yaml_file.write_text("executor: serial\nray_workers: 4\n")
    with pytest.raises(ConfigError, match=r"job.yaml: .*ray_workers set with executor: serial"):
        load_job_config("smoke", yaml_file)
    with pytest.raises(ConfigError, match=r"ray_address set with executor: serial"):
        load_job_config("smoke", executor="serial", ray_address="10.0.0.1:6379")


def _cli_search_config(monkeypatch, capsys, *args):
    """The JobConfig `recnas search ARGS` resolves, with the job itself stubbed out."""
    from recnas.search import pipeline
    from tests.test_cli_models import run

    seen = {}
    monkeypatch.setattr(pipeline, "run_job", lambda cfg, out, progress: seen.setdefault("cfg", cfg))
    code, _, err = run(monkeypatch, capsys, "search", "--budget", "smoke", *args)
    return code, seen.get("cfg"), err


def test_cli_ray_address_implies_the_ray_executor(tmp_path, monkeypatch, capsys):
    code, cfg, err = _cli_search_config(monkeypatch, capsys, "--ray-address", "10.0.0.1:6379")
    assert code == 0, err
    assert (cfg.executor, cfg.ray_address) == ("ray", "10.0.0.1:6379")
    serial = tmp_path / "serial.yaml"
    serial.write_text("executor: serial\n")
    code, cfg, err = _cli_search_config(monkeypatch, capsys, "--config", serial, "--ray-address", "h:1")
    assert code == 0 and cfg.executor == "ray", err  # the command line overrides the config
    code, cfg, err = _cli_search_config(monkeypatch, capsys, "--executor", "serial", "--ray-address", "h:1")
    assert code == 2 and cfg is None and "ray_address set with executor: serial" in err


def test_cli_finalists_overrides_the_config(tmp_path, monkeypatch, capsys):
    six = tmp_path / "six.yaml"
    six.write_text("finalists: 6\n")
    code, cfg, err = _cli_search_config(monkeypatch, capsys, "--config", six)
    assert code == 0 and cfg.finalists == 6, err
    code, cfg, err = _cli_search_config(monkeypatch, capsys, "--config", six, "--finalists", "1")
    assert code == 0 and cfg.finalists == 1, err
    code, cfg, err = _cli_search_config(monkeypatch, capsys, "--finalists", "0")
    assert code == 2 and cfg is None and "--finalists" in err


def test_jobs_sharing_the_synthetic_data_cache_wait_for_it_instead_of_failing(tmp_path, monkeypatch):
    """Run folders beside each other share runs/data/: a job that finds another one generating
    the store waits for it and reuses it (generated once), rather than being refused."""
    import threading

    from rich.console import Console

    import recnas.data.synthetic as synthetic
    from recnas.search.pipeline import prepare_data
    from recnas.staging import exclusive

    cfg = load_job_config("smoke")
    path = tmp_path / "data" / f"synthetic-{cfg.synthetic_rows}-seed{cfg.seed}"
    calls, release, done = [], threading.Event(), []
    real = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1])

    def first_job():  # holds the cache's lock while it generates, as prepare_data does
        with exclusive(path, "synthetic data cache"):
            synthetic.generate(path, rows=cfg.synthetic_rows, seed=cfg.seed)
            release.wait(10)

    first = threading.Thread(target=first_job)
    first.start()
    while not calls:
        first.join(0.01)
    printed = io.StringIO()
    second = threading.Thread(target=lambda: done.append(prepare_data(cfg, tmp_path / "b", Console(file=printed, width=400))))
    second.start()
    second.join(0.5)
    assert second.is_alive() and not done  # waiting, not failed
    release.set()
    first.join(10)
    second.join(30)
    assert len(done) == 1 and done[0].dir == path and calls == [path]  # reused, not generated again
    assert f"waiting for another job generating {path}" in printed.getvalue()  # it printed nothing: it looked hung


def test_data_path_is_recorded_absolute(tmp_path, monkeypatch):
    """`--data d` re-run from another directory names another store: the run folder records
    where the data was, so the re-run is refused instead of continuing on other rows."""
    from recnas.data.synthetic import generate

    for where in ("a", "b"):
        generate(tmp_path / where / "d", rows=3000, seed=0)
    over = dict(data="d", baselines=["lr"], evolution=dict(population=4, sample_size=2, children=1, generations=1))
    monkeypatch.chdir(tmp_path / "a")
    run_job(load_job_config("smoke", **over), tmp_path / "run", progress=False)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"] == str(tmp_path / "a" / "d")
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(ConfigError, match=r"holds a run with other settings \(data: .*a/d' -> .*b/d'\)"):
        run_job(load_job_config("smoke", **over), tmp_path / "run", progress=False)


def test_final_grid_trains_every_model_at_each_point_and_keeps_the_best_on_validation(tmp_path):
    """`final_grid` applies one selection to the searched model and every baseline: each trains
    at every point in its own folder, and the one kept is the lowest validation log loss."""
    from recnas.data.store import CTRStore
    from recnas.train import evaluate
    from recnas.train.model_factory import load_trained

    cfg = load_job_config("smoke", final_grid={"lr": [1e-3, 3e-2]}, finalists=2, baselines=["dlrm"])
    out = tmp_path / "run"
    report = run_job(cfg, out, progress=False)
    store = CTRStore(tmp_path / "data" / f"synthetic-{cfg.synthetic_rows}-seed{cfg.seed}")
    rows = {m["model"]: m for m in report["models"]}
    folders = {"recnas (searched)": out / "finalists" / next(f["key"] for f in report["finalists"] if f["chosen"]), "dlrm": out / "baselines" / "dlrm"}
    for name, folder in folders.items():
        vals = {}
        for tag in ("lr=0.001", "lr=0.03"):
            model, _, extra = load_trained(folder / tag / "model.pt")
            assert extra["config"]["lr"] == float(tag[3:])
            vals[tag] = evaluate(model, store.split("val"))["logloss"]
        assert vals["lr=0.001"] != vals["lr=0.03"]
        kept = min(vals, key=vals.get)
        assert rows[name]["final_choice"] == kept, (name, vals)
        assert {g["point"]: round(g["val_logloss"], 6) for g in rows[name]["grid"]} == {k: round(v, 6) for k, v in vals.items()}
        test = evaluate(load_trained(folder / kept / "model.pt")[0], store.split("test"))["logloss"]
        assert rows[name]["test_logloss"] == pytest.approx(test, abs=1e-6)
        # the row's train time is the kept point's alone
        assert rows[name]["train_seconds"] == next(g["train_seconds"] for g in rows[name]["grid"] if g["point"] == kept) > 0
    # best/ is the kept finalist's kept point; every finalist tried both points
    kept_dir = folders["recnas (searched)"] / rows["recnas (searched)"]["final_choice"]
    best_weights, kept_weights = (load_trained(d / "model.pt")[0].state_dict() for d in (out / "best", kept_dir))
    assert best_weights.keys() == kept_weights.keys() and all(torch.equal(best_weights[k], kept_weights[k]) for k in best_weights)
    assert all(len(f["grid"]) == 2 for f in report["finalists"])
    assert "kept at (final_grid)" in (out / "results.md").read_text()
    # re-run: every point is reused, nothing retrains
    again = run_job(cfg, out, progress=False)
    assert _losses(again) == _losses(report)
    # continued with fewer finalists and no grid: the top finalist at the plain recipe is the
    # result (best/ held another recipe's copy, in which the job used to try to resume)
    plain = run_job(load_job_config("smoke", finalists=1, baselines=["dlrm"]), out, progress=False)
    assert yaml.safe_load((out / "best" / "config.yaml").read_text())["lr"] == cfg.final.lr
    assert plain["finalists"][0]["key"] == report["finalists"][0]["key"] and "final_choice" not in plain["models"][0]


@pytest.mark.parametrize("grid, match", [
    ({"learning_rate": [1e-3]}, "'learning_rate' is not a setting of final"),
    ({"lr": []}, "non-empty list"),
    ({"lr": 1e-3}, "lr"),
    ({"lr": [1e-3, 0.001]}, "repeats"),
    ({"lr": [1, 1.0]}, "repeats"),  # one recipe once read: they shared the folder lr=1
    ({"lr": ["1e-3", 0.001]}, "repeats"),
    ({"epochs": [1, 1.0]}, "repeats"),
    ({"lr": [1e-3, -1.0]}, "final_grid point lr=-1.*greater than 0"),
    ({"device": ["cpu", "cuda"]}, "where or how fast"),
])
def test_bad_final_grids_are_refused_when_the_config_loads(grid, match):
    with pytest.raises(ConfigError, match=match):
        load_job_config("smoke", final_grid=grid)


def test_final_grid_points_keep_the_values_final_reads_and_never_share_a_folder():
    """Points were named with 6 digits from the values as given: two learning rates that agree
    in 6 digits trained in one folder, the second reusing (or resuming) the first's model."""
    from recnas.search.job import grid_points, point_tag

    cfg = load_job_config("smoke", final_grid={"lr": [0.0012345678, 0.0012345679, "1e-10", 1e-3], "epochs": [2.0]})
    assert cfg.final_grid == {"lr": [0.0012345678, 0.0012345679, 1e-10, 1e-3], "epochs": [2]}
    assert type(cfg.final_grid["epochs"][0]) is int
    tags = [point_tag(p) for p in grid_points(cfg.final_grid)]
    assert tags == ["lr=0.0012345678,epochs=2", "lr=0.0012345679,epochs=2", "lr=1e-10,epochs=2", "lr=0.001,epochs=2"]


def test_final_grid_with_halving_is_refused():
    with pytest.raises(ConfigError, match="halving"):
        load_job_config("smoke", final_grid={"lr": [1e-3, 3e-3]}, finalists=2, finalist_selection="halving")


def test_paths_with_brackets_are_printed_as_they_are(tmp_path):
    """Rich markup used to swallow a bracketed part of a run folder's path (`runs/[lr]`) in the
    job's messages, naming a folder that does not exist."""
    from rich.console import Console

    console = Console(record=True, width=400)
    out = tmp_path / "runs[bold]" / "a[x]"
    run_job(load_job_config("smoke", baselines=[]), out, progress=False, console=console)
    text = console.export_text()
    assert str(out / "results.md") in text and str(out.parent / "data") in text


def test_job_lines_are_not_wrapped_when_piped(tmp_path, capsys):
    """Piped into a log, rich wrapped every line at 80 columns, cutting run paths in two."""
    out = tmp_path / ("a-long-run-folder-name-" * 4)
    run_job(load_job_config("smoke", baselines=[]), out, progress=False)
    printed = capsys.readouterr().out
    assert f"-> {out / 'results.md'}" in printed


@pytest.mark.parametrize("budget", ["smoke", "cpu", "gpu"])
def test_every_preset_warms_up_within_its_own_runs_on_its_default_data(budget):
    """The `gpu` preset warmed its supernet up for 500 steps of a 390-step run on its default
    2M synthetic rows: its lr never reached the configured value."""
    from recnas.data.synthetic import split_assignment
    from recnas.search.job import PRESETS
    from recnas.train.plan import planned_steps

    assert budget in PRESETS
    cfg = load_job_config(budget)
    train_rows = int((split_assignment(cfg.synthetic_rows, cfg.seed) == 0).sum())  # the synthetic data's own split
    for stage in ("supernet", "finetune", "final"):
        c = getattr(cfg, stage)
        assert c.warmup_steps <= planned_steps(c, train_rows) // 2, (stage, c.warmup_steps)


def test_results_without_their_config_are_not_continued(tmp_path):
    """A run folder whose config.yaml is gone (or a search.sqlite copied into an empty one) used
    to be continued as this run's, its candidates' scores taken whatever settings made them."""
    cfg = load_job_config("smoke")
    check_same_run(cfg, tmp_path / "config.yaml")  # an empty folder is a new run
    (tmp_path / "search.sqlite").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"holds search.sqlite of a search but no config.yaml"):
        check_same_run(cfg, tmp_path / "config.yaml")
    dump_config(cfg, tmp_path / "config.yaml")
    check_same_run(cfg, tmp_path / "config.yaml")  # with its config: continued


def test_a_run_continued_with_a_shorter_search_reports_only_its_own_candidates(tmp_path):
    """search.sqlite keeps every candidate the run folder ever scored: a run continued with fewer
    generations (or another evolution seed) used to count and plot the earlier search's
    candidates too ("Search: 17 candidates evaluated" for a search of 7; in co-design its Pareto
    front), unlike the same search run afresh."""
    import re

    def cfg(generations):
        return load_job_config("smoke", baselines=["lr"], evolution=dict(population=4, sample_size=2, children=2, generations=generations))

    def counted(out):
        return int(re.search(r"Search: (\d+) candidates evaluated", (out / "results.md").read_text()).group(1))

    run_job(cfg(6), tmp_path / "run", progress=False)
    continued = run_job(cfg(1), tmp_path / "run", progress=False)
    fresh = run_job(cfg(1), tmp_path / "fresh", progress=False)
    assert continued["search"]["candidates_in_store"] > fresh["search"]["candidates_in_store"]
    assert counted(tmp_path / "run") == counted(tmp_path / "fresh") == fresh["search"]["candidates_in_store"]


@pytest.mark.parametrize("over, match", [
    (dict(final={"device": "cuda"}), r"^final: device: 'cuda' requested but no CUDA device"),
    (dict(finetune={"amp": "fp16"}), r"^finetune: amp: 'fp16' needs a CUDA device"),
])
def test_a_device_the_machine_lacks_is_refused_before_any_training(tmp_path, monkeypatch, over, match):
    """`final: {device: cuda}` without CUDA used to fail after the supernet and the search, in
    a line that did not say which section asked for it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=match):
        run_job(load_job_config("smoke", baselines=["lr"], **over), out, progress=False)
    assert not (out / "supernet").exists() and not (out / "config.yaml").exists()


def test_cli_device_sets_every_training_section_over_their_own(tmp_path, monkeypatch, capsys):
    """`recnas search` had no --device: a job config of `device: cuda` sections ran only where
    CUDA was, and the `smoke` preset's `device: cpu` sections could not be moved to a GPU. It
    sets every training section's device, their own too (unlike --seed, which a section's own
    seed wins over), and the run's config.yaml records it."""
    from tests.test_cli_models import error_line, run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tmp_path / "cuda.yaml"
    cuda = {"device": "cuda", "seed": 7}
    cfg.write_text(yaml.safe_dump({"baselines": ["lr"], "evolution": {"population": 4, "sample_size": 2, "children": 1, "generations": 1}, "supernet": cuda, "finetune": cuda, "final": cuda}))
    code, _, err = run(monkeypatch, capsys, "search", "--budget", "smoke", "--config", cfg, "--out", tmp_path / "cuda", "--no-progress")
    assert code == 2 and "supernet: device: 'cuda' requested but no CUDA device" in error_line(err)
    code, _, err = run(monkeypatch, capsys, "search", "--budget", "smoke", "--config", cfg, "--out", tmp_path / "cpu", "--no-progress", "--device", "cpu", "--seed", "3")
    assert code == 0, err
    written = yaml.safe_load((tmp_path / "cpu" / "config.yaml").read_text())
    assert {name: (written[name]["device"], written[name]["seed"]) for name in ("supernet", "finetune", "final")} == dict.fromkeys(("supernet", "finetune", "final"), ("cpu", 7))
    assert json.loads((tmp_path / "cpu" / "results.json").read_text())["environment"]["device"] == "cpu"
    # the preset's own device too; a fine-tune left null is still none
    none = tmp_path / "none.yaml"
    none.write_text("finetune: null\n")
    job = load_job_config("smoke", none, device="cuda")
    assert (job.supernet.device, job.final.device, job.finetune) == ("cuda", "cuda", None)
    assert load_job_config("smoke").supernet.device == "cpu"


def test_best_holds_the_winner_alone_not_other_models_of_its_folder(tmp_path):
    """best/ copied the winner's whole folder: continued without its final_grid it carried the
    earlier grid's models (best/lr=0.001/model.pt, ...), and a table phase not kept sat in it as
    best/tables-<digest>/, other models beside the one the results table reports."""
    out = tmp_path / "run"
    over = dict(baselines=["lr"], evolution=dict(population=4, sample_size=2, children=1, generations=1))
    run_job(load_job_config("smoke", final_grid={"lr": [1.0e-3, 3.0e-3]}, **over), out, progress=False)
    run_job(load_job_config("smoke", **over), out, progress=False)
    assert (out / "best" / "model.pt").exists()
    assert [p.name for p in (out / "best").iterdir() if p.is_dir()] == []


def test_threads_pins_the_job_and_results_record_what_ran(tmp_path, monkeypatch, capsys):
    """On the CPU the thread count changes the result (docs/benchmarks.md: the default job gives
    0.4925 with 1 thread, 0.4943 with 2), so `--threads` pins it for the job alone and the report
    says what the numbers were computed with."""
    from tests.test_cli_models import error_line, run

    cfg = tmp_path / "c.yaml"
    cfg.write_text("baselines: [lr]\n")
    before = torch.get_num_threads()
    code, _, err = run(monkeypatch, capsys, "search", "--budget", "smoke", "--config", cfg, "--threads", before + 1, "--out", tmp_path / "r", "--no-progress")
    assert code == 0, err
    assert torch.get_num_threads() == before  # restored: a Python caller's setting is its own
    env = json.loads((tmp_path / "r" / "results.json").read_text())["environment"]
    assert env["cpu_threads"] == before + 1 and env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert f"with {before + 1} CPU threads" in (tmp_path / "r" / "results.md").read_text()
    # and the CPU's kernels: the same code, data and threads gave another default job on another
    # machine (0.4943 on 2026-12-06, 0.4933 on 2026-12-07, docs/benchmarks.md)
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and isinstance(env["cpu"], str) and env["cpu"]
    assert f"{env['cpu']}, {env['cpu_capability']} kernels) with {before + 1} CPU threads" in (tmp_path / "r" / "results.md").read_text()
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["threads"] == before + 1
    # without it the job runs with what PyTorch has, and says so
    report = run_job(load_job_config("smoke", baselines=["lr"]), tmp_path / "d", progress=False)
    assert report["environment"]["cpu_threads"] == before
    code, _, err = run(monkeypatch, capsys, "search", "--budget", "smoke", "--threads", 0, "--out", tmp_path / "z")
    assert code == 2 and "--threads" in error_line(err)


def test_a_baseline_built_otherwise_in_the_run_folder_is_a_clear_refusal(tmp_path):
    """A run folder continued with other baseline hyper-parameters (or after an upgrade changed a
    preset's, as the `cpu` preset's xDeepFM did) used to stop at that baseline with "checkpoint is
    for a different model" and no way out named; the model already there is left as it was."""
    from recnas.errors import ConfigError

    hp = {"cin": [4, 4], "mlp": [8]}
    run_job(load_job_config("smoke", baselines=["xdeepfm"], baseline_hparams={"xdeepfm": hp}), tmp_path / "r", progress=False)
    ckpt = tmp_path / "r" / "baselines" / "xdeepfm" / "checkpoint.pt"
    before = ckpt.read_bytes()
    other = load_job_config("smoke", baselines=["xdeepfm"], baseline_hparams={"xdeepfm": {**hp, "cin_split_half": False}})
    with pytest.raises(ConfigError, match=r"model_spec differs in: hparams.*another --out, or delete .*xdeepfm to train that model afresh"):
        run_job(other, tmp_path / "r", progress=False)
    assert ckpt.read_bytes() == before


def test_a_run_folder_of_an_older_recnas_whose_models_had_other_weights_names_the_way_on(tmp_path):
    """A run folder from a recnas whose supernets and subnets had other weights (its first days':
    no logit heads, a norm per block) stopped at "checkpoint does not match the model" and no way
    on; the supernet's way on is another --out (the stored candidate scores come from it), a
    finished model's is its folder to delete. The files are left as they were."""
    from recnas.errors import CheckpointError
    from tests.test_checkpoint import older_layout

    cfg = load_job_config("smoke", baselines=["lr"], evolution=dict(population=4, sample_size=2, children=1, generations=1))
    out = tmp_path / "r"
    run_job(cfg, out, progress=False)
    older_layout(out / "baselines" / "lr" / "model.pt")
    with pytest.raises(CheckpointError, match=r"lr/model\.pt: .*written by an older recnas.*; delete .*baselines/lr to have the job train that model afresh, or give the job another --out$"):
        run_job(cfg, out, progress=False)
    older_layout(out / "supernet" / "model.pt")
    before = (out / "supernet" / "model.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"supernet/model\.pt: .*written by an older recnas.*; give the job another --out, where it trains its supernet and every model afresh$"):
        run_job(cfg, out, progress=False)
    assert (out / "supernet" / "model.pt").read_bytes() == before

def test_a_run_folder_whose_winner_trained_in_best_goes_on_from_it(tmp_path):
    """A recnas before 2026-12-03 trained the one finalist in best/ itself (no finalists/): the
    same job run again after an upgrade trained the winner afresh in finalists/<key> and replaced
    best/ with it, the earlier model lost (hours of training at the gpu budget). Such a best/
    holding the winner's model is taken on as its folder; one of another model is not."""
    cfg = load_job_config("smoke", baselines=["lr"], evolution=dict(population=4, sample_size=2, children=1, generations=1))
    out = tmp_path / "r"
    run_job(cfg, out, progress=False)
    shutil.rmtree(out / "finalists")  # the layout of then: the winner's run in best/ alone
    payload = torch.load(out / "best" / "model.pt", weights_only=True)
    name = next(k for k, v in payload["model"].items() if v.is_floating_point())
    payload["model"][name] += 0.5  # weights of its own, as an older recnas's training gave
    torch.save(payload, out / "best" / "model.pt")
    report = run_job(cfg, out, progress=False)
    key = report["finalists"][0]["key"]
    for folder in (out / "best", out / "finalists" / key):
        assert torch.equal(torch.load(folder / "model.pt", weights_only=True)["model"][name], payload["model"][name])
    # a best/ of another model (the spec of another architecture) is left to be replaced, as before
    shutil.rmtree(out / "finalists")
    other = torch.load(out / "best" / "model.pt", weights_only=True)
    other["model_spec"] = {**other["model_spec"], "arch": "{}"}
    torch.save(other, out / "best" / "model.pt")
    run_job(cfg, out, progress=False)
    assert torch.load(out / "best" / "model.pt", weights_only=True)["model_spec"] == payload["model_spec"]

def test_a_run_folder_whose_supernet_drew_other_paths_reports_its_scores_and_scores_no_more(tmp_path):
    """A supernet trained by a recnas before 2026-12-03 drew its paths of fewer tokens than
    fields otherwise than this recnas does: a continued search went on scoring candidates on it,
    their scores beside the stored ones of other paths (14 of a smoke search's 29 no longer
    reproduced). The job re-run on such a finished run reports what it has as it was; one that
    still has candidates to score stops, its database as it was."""
    from recnas.errors import CheckpointError
    from tests.test_cli_models import as_before_embedding_weight_decay

    cfg = load_job_config("smoke", baselines=["lr"], evolution=dict(population=4, sample_size=2, children=1, generations=1))
    out = tmp_path / "r"
    first = run_job(cfg, out, progress=False)
    for name in ("model.pt", "checkpoint.pt"):
        as_before_embedding_weight_decay(out / "supernet" / name)
    again = run_job(cfg, out, progress=False)
    assert again["search"]["evaluated_this_run"] == 0 and again["models"] == first["models"] and again["supernet"] == first["supernet"]
    scores = sqlite3.connect(out / "search.sqlite").execute("SELECT key, metrics FROM candidates").fetchall()
    longer = load_job_config("smoke", baselines=["lr"], evolution=dict(population=4, sample_size=2, children=1, generations=4))
    with pytest.raises(CheckpointError, match=r"supernet/.*before 2026-12-03.*; this run has candidates left to score on it: give the job another --out, where it trains its supernet afresh$"):
        run_job(longer, out, progress=False)
    assert sqlite3.connect(out / "search.sqlite").execute("SELECT key, metrics FROM candidates").fetchall() == scores

def test_a_store_named_data_beside_out_is_not_written_into(tmp_path):
    """The job caches its synthetic data in `data/` beside --out; where that is a prepared store,
    the cache went inside it and then blocked the store's --overwrite ("not part of one")."""
    make_tiny_store(tmp_path / "data")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*"))
    with pytest.raises(ConfigError, match=r"is a prepared data store .* give --out in another folder, or run on that store with --data"):
        run_job(load_job_config("smoke"), tmp_path / "srun", progress=False)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*")) == before
    assert not (tmp_path / "srun").exists()
    cache = tmp_path / "elsewhere"  # the cache's own stores are no such store: a second job reuses them
    first = run_job(load_job_config("smoke", baselines=[]), cache / "a", progress=False)
    stamp = (cache / "data" / "synthetic-3000-seed0" / "meta.json").stat().st_mtime_ns
    assert run_job(load_job_config("smoke", baselines=[]), cache / "b", progress=False)["bayes"] == first["bayes"]
    assert (cache / "data" / "synthetic-3000-seed0" / "meta.json").stat().st_mtime_ns == stamp


def test_a_nan_validation_loss_never_wins_a_grid_or_the_finalists(tmp_path, monkeypatch):
    """NaN compares false both ways: a first grid point with NaN logits stayed the kept point
    whatever followed (`val < best` never held), and `min` over finalists returned a NaN one
    that came first. Both now rank a loss that is not a number last."""
    import math

    import torch

    from recnas.search import finalists as finalist_selection
    from recnas.search import fitting

    store = make_tiny_store(tmp_path / "data")
    cfg = load_job_config("smoke", data=str(store.dir), final_grid={"lr": [1e-3, 3e-2]})
    losses = iter([math.nan, 0.5])
    monkeypatch.setattr(fitting, "fit_or_load", lambda build, tcfg, *a, **k: (torch.nn.Linear(1, 1), {"train_seconds": 0.0, "lr": tcfg.lr}))
    monkeypatch.setattr(fitting, "_val_logloss", lambda *a, **k: next(losses))
    kept = fitting.fit_selected(lambda: None, cfg, store, tmp_path / "f", False, "cpu")
    assert kept["val_logloss"] == 0.5 and kept["fit"]["lr"] == 3e-2
    finalists = [{"key": "a", "val_logloss": math.nan}, {"key": "b", "val_logloss": 0.4}, {"key": "c", "val_logloss": None}]
    assert finalist_selection.best_finalist(finalists)["key"] == "b"


def test_a_batch_norm_baseline_on_one_row_batches_is_refused_before_anything_trains(tmp_path, monkeypatch):
    """`baseline_hparams: {dlrm: {batch_norm: true}}` with `final: {batch_size: 1}` (or a point of
    `final_grid` with it) failed with torch's BatchNorm traceback once the supernet, the search and
    the retrain had run; it is refused when the job starts, naming the baseline."""
    store = make_tiny_store(tmp_path / "data")
    monkeypatch.setattr("recnas.search.pipeline.fit_or_load", lambda *a, **k: pytest.fail("trained before the baselines were checked"))
    bn = {"dlrm": {"bottom_mlp": [8, 4], "top_mlp": [8], "embed_dim": 4, "batch_norm": True}}
    for over in ({"final": {"batch_size": 1}}, {"final_grid": {"batch_size": [1, 64]}}, {"final": {"max_train_rows": 1}}):
        with pytest.raises(ConfigError, match=r"BatchNorm layers .* each batch has 1 row .* \(a baseline of this job: set its baseline_hparams"):
            run_job(load_job_config("smoke", data=str(store.dir), baselines=["dlrm"], baseline_hparams=bn, **over), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_epochs_of_a_grid_point_or_the_proxy_are_not_overridden_by_the_max_steps_of_final():
    """`max_steps` overrides `epochs`: with `final: {max_steps: N}`, `final_grid: {epochs: [1, 2]}`
    trained N steps at both points (reported as two), and the default proxy `{epochs: 1}` trained
    every candidate for the whole N steps. Settings that give epochs without max_steps now drop
    final's; a grid whose points would still train alike is refused."""
    from recnas.search.job import grid_points

    cfg = load_job_config("smoke", final={"max_steps": 40}, final_grid={"epochs": [1, 2]}, scoring="scratch")
    assert [(c.epochs, c.max_steps) for c in (cfg.final_config(p) for p in grid_points(cfg.final_grid))] == [(1, None), (2, None)]
    assert (cfg.proxy_config().epochs, cfg.proxy_config().max_steps) == (1, None)
    assert cfg.final_config({"lr": 0.01}).max_steps == 40  # a point without epochs keeps final's max_steps
    assert load_job_config("smoke", final={"max_steps": 40}, scoring="scratch", proxy={"max_steps": 5}).proxy_config().max_steps == 5
    with pytest.raises(ConfigError, match="final_grid: points that set max_steps train alike whatever their epochs .* 4 points would train only 2 recipes"):
        load_job_config("smoke", final_grid={"max_steps": [1, 2], "epochs": [1, 2]})


def test_results_md_says_which_split_has_one_class(tmp_path):
    """A test split without a click has no AUC: results.md showed "-" in every row's test AUC
    with nothing saying why (only the job's log warned)."""
    from recnas.data.schema import SPLITS, DatasetMeta
    from recnas.data.store import SplitArrays, write_store

    rng = np.random.default_rng(0)
    labels = {"train": (rng.random(480) < 0.3).astype(np.float32), "val": (np.arange(60) % 3 == 0).astype(np.float32), "test": np.zeros(60, np.float32)}
    splits = {s: SplitArrays(rng.normal(size=(len(labels[s]), 2)).astype(np.float32), rng.integers(0, 5, (len(labels[s]), 3)).astype(np.int32), labels[s]) for s in SPLITS}
    write_store(tmp_path / "data", splits, DatasetMeta(name="noclicks", dense_names=["I1", "I2"], cat_names=["C1", "C2", "C3"], vocab_sizes=[5, 5, 5], rows={},
                                                       positive_rate={s: float(labels[s].mean()) for s in SPLITS}))
    cfg = load_job_config("smoke", data=str(tmp_path / "data"), baselines=["lr"], evolution=dict(population=2, sample_size=1, children=1, generations=1))
    report = run_job(cfg, tmp_path / "run", progress=False)
    md = (tmp_path / "run" / "results.md").read_text()
    assert math.isnan(report["models"][0]["test_auc"])
    assert "warning: the test split holds no clicks (every label 0): AUC is undefined (n/a) on it" in md and "the val split" not in md
    assert json.loads((tmp_path / "run" / "results.json").read_text())["data_notes"] == report["data_notes"]


@pytest.mark.parametrize("before, after, change", [
    ({}, {"final": {"lr": 1.0e-3}}, "lr: 0.003 -> 0.001"),
    ({}, {"final": {"warmup_steps": 2}}, "warmup_steps: 0 -> 2"),
    ({}, {"final": {"max_eval_rows": 30}}, "max_eval_rows: None -> 30"),
    ({"table_finetune": {"epochs": 1, "lr_scale": 0.5}}, {"table_finetune": {"epochs": 1, "lr_scale": 0.25}}, "lr: 0.0015 -> 0.00075"),
])
def test_a_model_of_the_run_folder_under_a_changed_recipe_names_the_job_s_way_on(tiny_store, tmp_path, before, after, change):
    """A run folder continued with a final (or table_finetune) recipe its trained models cannot go
    on under was refused with the training command's way on: "resume it with --warmup-steps 0 on
    the training command's line", "start afresh (--overwrite)", flags `recnas search` does not
    have, or none at all. It names the model's folder to delete, or another --out; the model
    there is left as it was."""
    from recnas.search.fitting import baseline_builder, fit_selected

    build = baseline_builder("lr", tiny_store.meta, {})
    fit_selected(build, load_job_config("smoke", **before), tiny_store, tmp_path / "lr", False, "cpu", validate=False)
    phases = list((tmp_path / "lr").glob("tables-*"))
    assert len(phases) == ("table_finetune" in before)
    folder = phases[0] if phases else tmp_path / "lr"  # the model whose recipe changed: the phase's, or the baseline's
    saved = (folder / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError) as refused:
        fit_selected(build, load_job_config("smoke", **after), tiny_store, tmp_path / "lr", False, "cpu", validate=False)
    message = str(refused.value)
    assert message == (f"{folder / 'checkpoint.pt'}: cannot go on with a changed recipe ({change}), which decided the steps this model has taken; "
                       f"set it back, delete {folder} to have the job train that model afresh, or give the job another --out")
    assert (folder / "checkpoint.pt").read_bytes() == saved
