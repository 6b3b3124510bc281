"""benchmarks/search_quality.py: the per-seed verdict on the target (beat every baseline,
close half the best baseline's gap to the Bayes-optimal log loss, on every seed)."""

import pytest

from tests.conftest import benchmark_refused, load_benchmark

sq = load_benchmark("search_quality")


def _report(seed, searched, baselines, bayes=0.44):
    models = [{"model": sq.NAS, "test_logloss": searched, "test_auc": 0.7}]
    models += [{"model": k, "test_logloss": v, "test_auc": 0.7} for k, v in baselines.items()]
    return {"seed": seed, "models": models, "bayes": {"test_logloss": bayes}}


def test_a_seed_meets_the_target_only_beating_every_baseline_by_half_the_gap():
    v = sq.seed_verdict(_report(0, 0.45, {"xdeepfm": 0.46, "dcnv2": 0.47}))
    assert v["best_baseline"] == "xdeepfm" and v["beats_every_baseline"] and v["gap_closed"] == pytest.approx(0.5) and v["target_met"]
    v = sq.seed_verdict(_report(0, 0.455, {"xdeepfm": 0.46, "dcnv2": 0.47}))  # beats both, closes a quarter
    assert v["beats_every_baseline"] and v["gap_closed"] == pytest.approx(0.25) and not v["target_met"]
    v = sq.seed_verdict(_report(0, 0.465, {"xdeepfm": 0.46, "dcnv2": 0.47}))
    assert not v["beats_every_baseline"] and v["gap_closed"] < 0 and not v["target_met"]


def test_a_better_mean_does_not_hide_a_seed_lost_to_a_baseline():
    """The mean can beat every baseline while one seed does not: the target asks for every seed."""
    reports = [_report(0, 0.440, {"xdeepfm": 0.46}, bayes=0.43), _report(1, 0.465, {"xdeepfm": 0.46}, bayes=0.43)]
    summary = sq.summarise(reports)
    assert summary["beats_every_baseline"]  # on the means: 0.4525 < 0.46
    assert not summary["beats_every_baseline_on_every_seed"] and not summary["target_met"]
    assert [v["beats_every_baseline"] for v in summary["seeds"]] == [True, False]
    good = sq.summarise([_report(0, 0.440, {"xdeepfm": 0.46}, bayes=0.43), _report(1, 0.441, {"xdeepfm": 0.46}, bayes=0.43)])
    assert good["beats_every_baseline_on_every_seed"] and good["target_met"]


def test_real_data_has_no_gap_verdict():
    report = _report(0, 0.45, {"dlrm": 0.46})
    del report["bayes"]
    summary = sq.summarise([report])
    assert "target_met" not in summary and "gap_closed" not in summary["seeds"][0] and summary["beats_every_baseline_on_every_seed"]


def test_a_run_without_baselines_reports_the_search_alone():
    """`baselines: []` is a valid job; the summary then has the searched model's numbers and no verdict."""
    summary = sq.summarise([_report(0, 0.45, {}), _report(1, 0.47, {})])
    assert summary["models"][sq.NAS]["logloss_mean"] == pytest.approx(0.46)
    assert "target_met" not in summary and "best_baseline" not in summary
    assert summary["seeds"] == [{"seed": 0, "searched": 0.45}, {"seed": 1, "searched": 0.47}]


@pytest.mark.parametrize("seeds, message", [("0,0", "distinct"), ("0,1,0", "distinct"), ("-1", ">= 0"), ("a", "comma-separated integers"), ("", "comma-separated integers")])
def test_seeds_are_distinct_integers(seeds, message, tmp_path, capsys):
    """A seed given twice was run once and counted twice: in the means, the spread, the 'over N
    seeds' count and the verdict on every seed."""
    err = benchmark_refused("search_quality", ["--budget", "smoke", "--seeds", seeds, "--out-dir", str(tmp_path / "sq")], capsys)
    assert "argument --seeds" in err and message in err
    assert not (tmp_path / "sq").exists()
    assert sq.seed_list("3,0,1") == [3, 0, 1]


def test_a_failed_seed_leaves_the_finished_ones_summarised(tmp_path, capsys):
    """Seeds side by side (--jobs): one that fails (its run folder is a file) is one line, and
    the seed that finished is summarised in search_quality-seeds0-1.json, the failed one listed."""
    import json

    out = tmp_path / "sq"
    out.mkdir()
    (out / "seed1").write_text("not a run folder")
    err = benchmark_refused("search_quality", ["--budget", "smoke", "--seeds", "0,1", "--jobs", "2", "--out-dir", str(out)], capsys)
    assert err.startswith("error: 1 of 2 seeds failed") and "search_quality-seeds0-1.json" in err and len(err.strip().splitlines()) == 1
    result = json.loads((out / "search_quality-seeds0-1.json").read_text())
    assert [r["seed"] for r in result["reports"]] == [0] and result["missing_seeds"] == [1]
    assert result["summary"]["seeds"][0]["searched"] == json.loads((out / "seed0" / "results.json").read_text())["models"][0]["test_logloss"]


def test_a_run_of_other_seeds_into_the_same_folder_keeps_the_first_summary(tmp_path, capsys):
    """search_quality.json was one name for every run: a run of seed 1 into the folder of a run
    of seed 0 wrote over its summary, seed 0's numbers gone from it without a word."""
    import json

    from tests.conftest import run_benchmark

    out = tmp_path / "sq"
    for seed in ("0", "1"):
        run_benchmark("search_quality", "--budget", "smoke", "--rows", "1000", "--seeds", seed, "--out-dir", str(out))
        assert f"-> {out / f'search_quality-seeds{seed}.json'}" in capsys.readouterr().out
    first, second = (json.loads((out / f"search_quality-seeds{s}.json").read_text()) for s in "01")
    assert [r["seed"] for r in first["reports"]] == [0] and [r["seed"] for r in second["reports"]] == [1]
    assert first["args"]["out_dir"] == str(out)


def test_an_error_about_the_run_folder_names_this_scripts_option(tmp_path, capsys):
    """The job's errors said 'use another --out', an option search_quality.py does not have."""
    out = tmp_path / "sq"
    (out / "seed0").mkdir(parents=True)
    (out / "seed0" / "config.yaml").write_text("not: [a job")
    err = benchmark_refused("search_quality", ["--budget", "smoke", "--rows", "1000", "--seeds", "0", "--out-dir", str(out)], capsys)
    assert err.startswith("error: ") and "use another --out-dir" in err and "--out " not in err and not err.rstrip().endswith("--out")
