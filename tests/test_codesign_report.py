"""benchmarks/codesign.py: cost ratios against the baselines a co-designed model matches."""

import pytest

from tests.conftest import benchmark_refused, load_benchmark

codesign = load_benchmark("codesign")


def _row(name, loss, flops, energy, latency, seq):
    return {"model": name, "key": name, "test_logloss": loss, "flops": flops, "energy": energy, "latency": latency, "latency_seq": seq}


def test_ratios_only_against_baselines_the_candidate_matches():
    cand = _row("c", 0.4692, 480_864, 186_801, 2_970, 10_536)
    baselines = [_row("xdeepfm", 0.4686, 60_795_226, 18_889_279, 41_871, 45_944), _row("dlrm", 0.4739, 972_064, 417_249, 5_835, 5_901), _row("tie", 0.4692, 961_728, 186_801, 1_485, 10_536)]
    got = codesign.ratios_to_matched(cand, baselines)
    assert set(got) == {"dlrm", "tie"}  # xDeepFM's loss is lower: no ratio claimed against it
    assert got["dlrm"]["flops"] == pytest.approx(972_064 / 480_864)
    assert got["dlrm"]["latency_seq"] == pytest.approx(5_901 / 10_536)  # < 1: slower summed layer by layer
    assert got["tie"] == pytest.approx({"flops": 2.0, "energy": 1.0, "latency": 0.5, "latency_seq": 1.0})
    assert codesign.ratios_to_matched(cand, baselines[:1]) == {}


@pytest.mark.parametrize("flags, message", [(["--ratios", "0", "1", "1"], "ratios must be positive"), (["--ratios", "-1", "1", "1"], "ratios must be positive"),
                                            (["--beta=-1"], "objective.beta"), (["--reference", "nope"], "reference must be one of")])
def test_a_bad_objective_is_refused_before_the_job_runs(flags, message, tmp_path, capsys):
    """The objective is checked as the job checks a config: a negative ratio was searched with
    and written into the run folder's config.yaml, which no later run could read."""
    out = tmp_path / "cd"
    err = benchmark_refused("codesign", ["--budget", "smoke", "--out-dir", str(out), *flags], capsys)
    assert message in err and "--ratios/--beta/--reference" in err
    assert not out.exists()


@pytest.mark.parametrize("baselines", ["[]", "[lr]"])
def test_a_job_without_a_hand_designed_baseline_is_refused_before_it_runs(baselines, tmp_path, capsys):
    """It failed on min() of no baselines after the whole job."""
    config, out = tmp_path / "job.yaml", tmp_path / "cd"
    config.write_text(f"baselines: {baselines}\n")
    err = benchmark_refused("codesign", ["--budget", "smoke", "--config", str(config), "--out-dir", str(out)], capsys)
    assert "no hand-designed baseline" in err and not out.exists()


def test_each_objective_writes_its_own_result_beside_the_others():
    """A pareto run (or one with other --ratios) into the --out-dir of a penalized run shares
    its search, as the job allows, and wrote over its codesign.json: the first result lost."""
    import argparse

    def name(**given):
        args = {"objective": "penalized", "reference": "dlrm", "ratios": [2.0, 1.8, 1.5], "beta": 1.0, "retrain": 3, "tolerance": 0.01, **given}
        return codesign.result_name(argparse.Namespace(**args))

    assert name() == "codesign-penalized-dlrm-ratios2-1.8-1.5-beta1.json"
    others = [name(objective="pareto"), name(ratios=[3.0, 1.8, 1.5]), name(reference="deepfm"), name(beta=2.0), name(objective="pareto", retrain=1), name(objective="pareto", tolerance=0.1)]
    assert len({name(), *others}) == 7 and name(retrain=1) == name()  # pareto's options do not name a penalized run


def test_the_baselines_and_candidates_are_printed_as_a_table():
    """codesign.py printed one sentence per model, the only benchmark without a table."""
    best, other = {**_row("dlrm", 0.6291, 29_680, 108_212, 3_388, 3_454), "test_logloss_full_precision": 0.629}, {**_row("deepfm", 0.64, 1, 2, 3, 4), "test_logloss_full_precision": 0.641}
    cand = {**_row("c1", 0.6246, 26_992, 70_423, 2_283, 5_292), "test_logloss_full_precision": 0.6273}
    lines = codesign.cost_table([other, best], [cand], best).splitlines()
    assert lines[0].startswith("| model | test log loss on PIM |") and len(lines) == 5
    assert lines[2] == "| baseline dlrm (best) | 0.6291 | 0.6290 | 29,680 | 108,212 | 3,388 | 3,454 |"
    assert lines[3].startswith("| baseline deepfm |") and lines[4] == "| co-designed c1 | 0.6246 | 0.6273 | 26,992 | 70,423 | 2,283 | 5,292 |"
