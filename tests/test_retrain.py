"""benchmarks/retrain.py: a job's model retrained at other training seeds gives, at the job's own
seed, exactly the job's numbers; bad option combinations are one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import benchmark_refused, run_benchmark

GRID = "final_grid: {embedding_weight_decay: [0.0, 1.0e-3]}\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished smoke jobs (data seeds 0 and 1) with a two-point final grid."""
    from recnas.search.job import load_job_config
    from recnas.search.pipeline import run_job

    root = tmp_path_factory.mktemp("runs")
    (root / "grid.yaml").write_text(GRID)
    reports = {s: run_job(load_job_config("smoke", root / "grid.yaml", seed=s), root / f"run{s}", progress=False) for s in (0, 1)}
    return root, reports


def _retrain(out, *argv) -> list[dict]:
    run_benchmark("retrain", *argv, "--out-dir", str(out))
    newest = max(out.glob("retrain-*.json"), key=lambda p: p.stat().st_mtime_ns)  # the file of this run
    return json.loads(newest.read_text())["rows"]


def _job_row(report, name):
    return next(m for m in report["models"] if m["model"] == name)


def test_the_job_seed_gives_the_job_numbers_exactly(runs, tmp_path):
    root, reports = runs
    for seed in (0, 1):
        run = str(root / f"run{seed}")
        (dlrm,) = _retrain(tmp_path / f"b{seed}", "dlrm", "--run", run)
        (searched,) = _retrain(tmp_path / f"s{seed}", "searched", "--run", run)
        job_dlrm, job_searched = _job_row(reports[seed], "dlrm"), _job_row(reports[seed], "recnas (searched)")
        assert (dlrm["seed"], dlrm["train_seed"]) == (seed, seed)
        assert dlrm["test_logloss"] == job_dlrm["test_logloss"] and dlrm["final_choice"] == job_dlrm["final_choice"]
        assert searched["test_logloss"] == job_searched["test_logloss"] and searched["final_choice"] == job_searched["final_choice"]
        assert searched["model"] == f"searched {_arch_hash(root / f'run{seed}')}"


def _arch_hash(run):
    from recnas.space.arch import Architecture

    return Architecture.load(run / "best_arch.json").hash


def test_side_by_side_trains_the_same_models(runs, tmp_path):
    """--jobs trains each grid point in its own process; the report then loads them."""
    root, _ = runs
    argv = ("searched", "--run", str(root / "run{seed}"), "--seeds", "0,1", "--train-seeds", "0,2")
    one = _retrain(tmp_path / "one", *argv)
    two = _retrain(tmp_path / "two", *argv, "--jobs", "2")
    assert [(r["seed"], r["train_seed"], r["test_logloss"], r["final_choice"]) for r in one] == [(r["seed"], r["train_seed"], r["test_logloss"], r["final_choice"]) for r in two]
    assert len({r["test_logloss"] for r in one}) == 4  # another training seed, another model


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_failed_training_keeps_the_finished_ones(runs, tmp_path, capsys, jobs):
    """A training that fails (here: a corrupt checkpoint to resume from) is one line; the
    trainings that finished are in the result JSON, each the job's own number, and the failed
    one is listed as missing."""
    from recnas.search.job import point_tag

    root, reports = runs
    out = tmp_path / "out"
    broken = out / "dlrm" / "seed0_train1" / point_tag({"embedding_weight_decay": 1.0e-3})
    broken.mkdir(parents=True)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    err = benchmark_refused("retrain", ["dlrm", "--run", str(root / "run0"), "--train-seeds", "0,1", "--jobs", jobs, "--out-dir", str(out)], capsys)
    assert err.startswith("error: ") and "corrupt or truncated checkpoint" in err and len(err.strip().splitlines()) == 1
    if jobs == "2":  # the pool's own summary, after every other training ran
        assert "1 of 2 (data seed, training seed) trainings failed" in err and "retrain-dlrm-seeds0-train0-1-" in err
    (path,) = out.glob("retrain-dlrm-seeds0-train0-1-*.json")  # the digest of --run
    result = json.loads(path.read_text())
    assert [(r["seed"], r["train_seed"]) for r in result["rows"]] == [(0, 0)]
    assert result["rows"][0]["test_logloss"] == _job_row(reports[0], "dlrm")["test_logloss"]
    assert result["missing"] == [{"seed": 0, "train_seed": 1}]


def test_another_run_into_the_same_folder_keeps_the_first_ones_results(runs, tmp_path):
    """Other training seeds into the same --out-dir write their own result JSON, not over the first."""
    root, _ = runs
    (first,) = _retrain(tmp_path, "dlrm", "--run", str(root / "run0"))
    (path,) = tmp_path.glob("retrain-dlrm-seeds0-*.json")
    before = path.read_text()
    (other,) = _retrain(tmp_path, "dlrm", "--run", str(root / "run0"), "--train-seeds", "1")
    assert path.read_text() == before
    (new,) = set(tmp_path.glob("retrain-dlrm-seeds0-train1-*.json"))
    assert json.loads(new.read_text())["rows"] == [other]
    assert (first["train_seed"], other["train_seed"]) == (0, 1) and first["test_logloss"] != other["test_logloss"]


def test_another_grid_or_search_run_into_the_same_folder_keeps_the_first_ones_results(runs, tmp_path):
    """A run with --grid (or of another search's winner, or another --pick) wrote over the
    result JSON of the run without: the same name, the first run's row lost."""
    root, _ = runs
    (plain,) = _retrain(tmp_path, "dlrm", "--run", str(root / "run0"))
    (first,) = tmp_path.glob("retrain-*.json")
    before = first.read_text()
    (gridded,) = _retrain(tmp_path, "dlrm", "--run", str(root / "run0"), "--grid", '{"embedding_weight_decay": [0.001]}')
    (searched0,) = _retrain(tmp_path, "searched", "--run", str(root / "run0"))
    (lowest,) = _retrain(tmp_path, "searched", "--run", str(root / "run0"), "--pick", "lowest-logloss")
    assert first.read_text() == before and len(list(tmp_path.glob("retrain-*.json"))) == 4  # each its own
    assert (plain["seed"], gridded["seed"], searched0["seed"], lowest["seed"]) == (0, 0, 0, 0)


def test_lowest_logloss_picks_the_store_candidate_of_lowest_search_loss(runs, tmp_path):
    from recnas.search.results import ResultsStore

    root, _ = runs
    store = ResultsStore(root / "run0" / "search.sqlite", read_only=True)
    best = min(store.all(), key=lambda r: r["logloss"])
    arch, _ = store.design(best["key"])
    store.close()
    (row,) = _retrain(tmp_path, "searched", "--run", str(root / "run0"), "--pick", "lowest-logloss", "--grid", '{"embedding_weight_decay": [0.001]}')
    assert row["model"] == f"searched {arch.hash}" and row["final_choice"] == "embedding_weight_decay=0.001" and len(row["grid"]) == 1


def _beside_the_first(tmp_path, run, model, *option) -> tuple[dict, dict, list, list]:
    """The model trained plain, then with `option`: both rows, the first model's files (left as
    they were) and the new ones."""
    (plain,) = _retrain(tmp_path, model, "--run", run)
    first = sorted(tmp_path.rglob("model.pt"))
    stamps = [p.stat().st_mtime_ns for p in first]
    (other,) = _retrain(tmp_path, model, "--run", run, *option)
    assert other["test_logloss"] != plain["test_logloss"]
    assert [p.stat().st_mtime_ns for p in first] == stamps
    return plain, other, first, sorted(set(tmp_path.rglob("model.pt")) - set(first))


def test_other_hparams_train_another_model_beside_the_first(runs, tmp_path):
    root, _ = runs
    run = str(root / "run0")
    plain, other, first, _ = _beside_the_first(tmp_path, run, "dlrm", "--hparams", '{"top_mlp": [4]}')
    assert other["hparams"]["top_mlp"] == [4]
    assert len(first) == 2  # the plain model's, one per grid point
    stamps = [p.stat().st_mtime_ns for p in first]
    (again,) = _retrain(tmp_path, "dlrm", "--run", run)
    assert again["test_logloss"] == plain["test_logloss"] and [p.stat().st_mtime_ns for p in first] == stamps  # loaded, not retrained


def test_other_space_options_train_the_searched_model_with_them_beside_the_first(runs, tmp_path):
    """--space: the winner retrained with another CIN head, in its own folder."""
    import torch

    root, _ = runs
    plain, headed, _, new = _beside_the_first(tmp_path, str(root / "run0"), "searched", "--space", '{"cin_head": [4, 4]}')
    assert headed["model"] == plain["model"] and len(new) == 2  # one per grid point
    for path in new:
        saved = torch.load(path, weights_only=False)
        assert saved["model_spec"]["space"]["cin_head"] == [4, 4] and any(k.startswith("cin_head.") for k in saved["model"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["dlrm", "--run", "RUN0", "--budget", "smoke"], "--run gives the job config"),
        (["searched", "--budget", "smoke"], "searched needs --run"),
        (["searched", "--run", "RUN0", "--hparams", "{}"], "--hparams is for a baseline"),
        (["dlrm", "--budget", "smoke", "--pick", "lowest-logloss"], "--pick is for searched"),
        (["dlrmx", "--budget", "smoke"], "neither 'searched' nor a baseline"),
        (["searched", "--run", "RUN0", "--seeds", "1"], "is a run of data seed 0, not 1"),
        (["searched", "--run", "ROOT/run{seed}", "--seeds", "2"], "run2 is not a search run folder"),
        (["searched", "--run", "ROOT/run{seed}"], "needs --seeds"),
        (["searched", "--run", "RUN0", "--pick", "nokey"], "no candidate 'nokey'"),
        (["dlrm", "--run", "RUN0", "--hparams", '{"topmlp": [4]}'], "unknown key 'topmlp'"),
        (["dlrm", "--run", "RUN0", "--space", '{"cin_head": [4]}'], "--space is for searched"),
        (["searched", "--run", "RUN0", "--space", '{"cinhead": [4]}'], "unknown key 'cinhead'"),
        (["searched", "--run", "RUN0", "--space", '{"n_blocks": 1}'], "architecture has 3 blocks"),
    ],
)
def test_a_bad_combination_is_one_line(runs, argv, message, tmp_path, capsys):
    root, _ = runs
    argv = [a.replace("RUN0", str(root / "run0")).replace("ROOT", str(root)) for a in argv]
    err = benchmark_refused("retrain", [*argv, "--out-dir", str(tmp_path / "out")], capsys)
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any data was made (a bad --pick key: after), nothing trained


def test_a_search_with_no_scored_candidate_has_none_to_pick(runs, tmp_path, capsys):
    import shutil
    import sqlite3

    root, _ = runs
    run = tmp_path / "empty"
    shutil.copytree(root / "run0", run)
    with sqlite3.connect(run / "search.sqlite") as db:
        db.execute("DELETE FROM candidates")
    err = benchmark_refused("retrain", ["searched", "--run", str(run), "--pick", "lowest-logloss", "--out-dir", str(tmp_path / "out")], capsys)
    assert err.startswith("error: ") and "holds no scored candidate yet" in err and len(err.strip().splitlines()) == 1


def test_an_unfinished_search_has_no_chosen_model(runs, tmp_path, capsys):
    import shutil

    root, _ = runs
    run = tmp_path / "unfinished"
    shutil.copytree(root / "run0", run)
    (run / "best_arch.json").unlink()
    err = benchmark_refused("retrain", ["searched", "--run", str(run), "--out-dir", str(tmp_path / "out")], capsys)
    assert "no best_arch.json" in err and "--pick lowest-logloss" in err


@pytest.mark.parametrize("flag, value, message", [("--hparams", "{top_mlp: 4}", "must be a JSON object"), ("--grid", "[1]", "must be a JSON object"), ("--space", "cin_head", "must be a JSON object"), ("--train-seeds", "1,1", "distinct")])
def test_a_bad_option_value_is_refused_before_any_work(flag, value, message, tmp_path, capsys):
    err = benchmark_refused("retrain", ["dlrm", "--budget", "smoke", flag, value, "--out-dir", str(tmp_path / "out")], capsys)
    assert f"argument {flag}" in err and message in err and not (tmp_path / "out").exists()


def test_a_codesign_winner_is_retrained_on_its_pim_configuration(tmp_path):
    """The winner of `--hardware pim` trains quantisation-aware on its PIM configuration: its
    retraining gives the job's log loss both as it is and as it runs there."""
    from recnas.search.job import load_job_config
    from recnas.search.pipeline import run_job

    report = run_job(load_job_config("smoke", seed=0, hardware="pim", baselines=[]), tmp_path / "run", progress=False)
    job = _job_row(report, "recnas (searched)")
    (row,) = _retrain(tmp_path / "out", "searched", "--run", str(tmp_path / "run"))
    assert (row["test_logloss"], row["test_logloss_pim"]) == (job["test_logloss"], job["test_logloss_pim"])
