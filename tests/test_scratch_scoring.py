"""`scoring: scratch`: the search scores each candidate by a short training from scratch, with no
supernet (recnas/search/evaluator.py, CandidateEvaluator without a supernet)."""

import json
import math
import re

import numpy as np
import pytest

from recnas.errors import ConfigError, TrainingDiverged
from recnas.search.evaluator import CandidateEvaluator, Genotype
from recnas.search.job import check_same_run, dump_config, load_job_config
from recnas.search.pipeline import run_job
from recnas.space import get_space
from recnas.space.samplers import random_architecture
from recnas.train import TrainConfig


def test_scratch_scored_search_trains_no_supernet_and_scores_as_its_retrain_does(tmp_path):
    # the proxy is the final recipe itself (1 epoch at the smoke budget) and the 300 eval rows are
    # the whole validation split: a candidate's search score must then be exactly the validation
    # log loss its retrain reaches, which holds only if the proxy builds and seeds it as the retrain does
    cfg = load_job_config("smoke", scoring="scratch", baselines=["lr"], finalists=2)
    assert cfg.proxy_config() == cfg.final
    out = tmp_path / "run"
    report = run_job(cfg, out, progress=False)
    assert not (out / "supernet").exists() and report["supernet"] is None
    assert report["search"]["scoring"] == "scratch" and report["search"]["evaluated_this_run"] >= 6
    for f in report["finalists"]:
        assert f["search_score"] == pytest.approx(f["val_logloss"], abs=1e-6)
    assert "trained briefly from scratch" in (out / "results.md").read_text()
    again = run_job(cfg, out, progress=False)  # resumed: every score comes from search.sqlite
    assert again["search"]["evaluated_this_run"] == 0 and again["best_arch"] == report["best_arch"]


def test_a_proxy_budget_changes_the_scores_and_is_part_of_the_run(tmp_path):
    one = load_job_config("smoke", scoring="scratch", proxy={"max_steps": 1})
    assert one.proxy_config().max_steps == 1 and one.proxy_config().lr == one.final.lr
    out = tmp_path / "run"
    out.mkdir()
    dump_config(one, out / "config.yaml")
    # scores came from that proxy: another proxy, or another final it is made from, would mix them
    for over, match in (({"proxy": {"max_steps": 2}}, r"proxy.max_steps: 1 -> 2\)"), ({"final": {"lr": 0.01}}, r"proxy.lr: 0.003 -> 0.01\)"), ({"scoring": "supernet"}, r"scoring: 'scratch' -> 'supernet'; sampler: None -> 'single-op-any-conn'; supernet: None -> \{\.\.\.\}")):
        with pytest.raises(ConfigError, match=r"holds a run with other settings \(" + match):
            check_same_run(load_job_config("smoke", **{"scoring": "scratch", "proxy": {"max_steps": 1}, **over}), out / "config.yaml")
    # the supernet and its fine-tune are never trained when scoring from scratch: changing them is harmless
    check_same_run(load_job_config("smoke", scoring="scratch", proxy={"max_steps": 1}, supernet={"lr": 0.5}, finetune={"max_steps": 9}, sampler="any-path"), out / "config.yaml")
    # nor is a change of final that the proxy overrides (here its length): the proxy's recipe is the same
    check_same_run(load_job_config("smoke", scoring="scratch", proxy={"max_steps": 1}, final={"max_steps": 5}), out / "config.yaml")


@pytest.mark.parametrize(
    "over, match",
    [
        ({"scoring": "scratchy"}, r"scoring"),
        ({"scoring": "scratch", "proxy": {"epoch": 1}}, r"proxy: 'epoch' is not a setting of final"),
        ({"scoring": "scratch", "proxy": {"device": "cpu"}}, r"proxy: 'device' says where or how fast"),
        ({"scoring": "scratch", "proxy": {"lr": -1}}, r"proxy.*lr"),
        ({"scoring": "scratch", "proxy": {"max_steps": 1, "warmup_steps": 5}}, r"warmup_steps \(5\) exceeds max_steps \(1\)"),
    ],
)
def test_bad_scoring_settings_are_refused_when_the_config_loads(over, match):
    with pytest.raises(ConfigError, match=match):
        load_job_config("smoke", **over)


def test_a_candidate_that_diverges_scores_inf_and_the_search_goes_on(tiny_store, monkeypatch):
    from recnas.train import trainer

    space = get_space("full-tiny")
    rng = np.random.default_rng(0)
    genos = [Genotype(random_architecture(rng, space)) for _ in range(2)]
    ev = CandidateEvaluator(space, tiny_store, TrainConfig(batch_size=64, max_steps=3, eval_every=0, device="cpu"), eval_rows=None)
    fine = ev(genos[0])
    assert math.isfinite(fine["logloss"]) and "diverged" not in fine

    def diverge(self, *args, **kwargs):
        raise TrainingDiverged("training diverged: loss nan at step 2")

    monkeypatch.setattr(trainer.Trainer, "fit", diverge)
    bad = ev(genos[1])
    assert bad["logloss"] == math.inf and bad["diverged"] and bad["flops"] > 0
    assert json.loads(json.dumps(bad))["logloss"] == math.inf  # stored in search.sqlite as JSON


def test_a_candidate_whose_logits_are_nan_is_marked_diverged(tiny_store, monkeypatch):
    """Finite weights whose validation logits overflow to NaN (a fine-tune at lr 1e3 left such
    candidates) were stored with log loss NaN, unmarked: `search show` listed it as "-"."""
    import recnas.train

    space = get_space("full-tiny")
    geno = Genotype(random_architecture(np.random.default_rng(0), space))
    monkeypatch.setattr(recnas.train, "evaluate", lambda *a, **k: {"logloss": math.nan, "auc": math.nan, "rows": 10})
    bad = CandidateEvaluator(space, tiny_store, TrainConfig(batch_size=64, max_steps=1, eval_every=0, device="cpu"), eval_rows=None)(geno)
    assert bad["logloss"] == math.inf and bad["diverged"] and bad["flops"] > 0


def test_a_diverged_candidate_never_wins_and_the_report_is_written(tmp_path, monkeypatch):
    from recnas.search import evaluator

    calls = {"n": 0}
    real = evaluator.CandidateEvaluator.__call__

    def every_other_diverges(self, geno):
        calls["n"] += 1
        if calls["n"] % 2:
            return {"logloss": math.inf, "auc": math.nan, "diverged": True, **evaluator.architecture_costs(geno.arch, self.space, self.store.meta)}
        return real(self, geno)

    monkeypatch.setattr(evaluator.CandidateEvaluator, "__call__", every_other_diverges)
    report = run_job(load_job_config("smoke", scoring="scratch", baselines=["lr"]), tmp_path / "run", progress=False)
    assert math.isfinite(report["finalists"][0]["search_score"])
    assert (tmp_path / "run" / "score_vs_cost.png").stat().st_size > 0


def test_an_evaluator_needs_a_supernet_or_a_training_config(tiny_store):
    with pytest.raises(ValueError, match="needs a training config"):
        CandidateEvaluator(get_space("full-tiny"), tiny_store)


def test_a_scratch_score_does_not_depend_on_what_ran_before(tiny_store):
    """Candidates are scored in any order (and resumed, or on Ray workers): each is built right
    after seeding, so the global RNG state left by earlier work must not change its score."""
    import torch

    space = get_space("full-tiny")
    g = Genotype(random_architecture(np.random.default_rng(1), space))
    ev = CandidateEvaluator(space, tiny_store, TrainConfig(batch_size=64, max_steps=3, eval_every=0, device="cpu", seed=3), eval_rows=None)
    first = ev(g)["logloss"]
    torch.rand(1000)  # what other work does to the RNG between two candidates
    assert ev(g)["logloss"] == first


def test_diverged_candidates_are_counted_and_a_search_of_nothing_else_says_so(tmp_path, monkeypatch, capsys):
    """A search whose every candidate diverged (a fine-tune or proxy lr far too high) ranked
    none of them, then retrained an arbitrary one and reported it as the searched model, results.md
    saying only "10 candidates evaluated". The job warns, and results.md and results.json count them."""
    import json
    from rich.console import Console

    from recnas.search import evaluator

    real = evaluator.CandidateEvaluator.__call__
    diverge = {"every": False}

    def diverges(self, geno):
        if diverge["every"] or int(geno.key[-1], 16) % 2:
            return {"logloss": math.inf, "auc": math.nan, "diverged": True, **evaluator.architecture_costs(geno.arch, self.space, self.store.meta)}
        return real(self, geno)

    monkeypatch.setattr(evaluator.CandidateEvaluator, "__call__", diverges)
    for every, out in ((False, tmp_path / "some"), (True, tmp_path / "all")):
        diverge["every"] = every
        report = run_job(load_job_config("smoke", scoring="scratch", baselines=[]), out, progress=False, console=Console(file=None, soft_wrap=True))
        printed, md = capsys.readouterr().out, (out / "results.md").read_text()
        n, k = report["search"]["candidates_this_search"], report["search"]["diverged_this_search"]
        assert json.loads((out / "results.json").read_text())["search"]["diverged_this_search"] == k
        if every:
            assert k == n and "every candidate (10) diverged in its training from scratch" in printed
            assert "**every one of them diverged** (scored inf): the search ranked none" in md
        else:
            assert 0 < k < n and f"warning: {k} of {n} candidates diverged in their training from scratch" in printed
            assert f"candidates evaluated (validation log loss, trained briefly from scratch), {k} of them diverged (scored inf);" in md


def test_a_recipe_warning_is_printed_once_per_job_not_once_per_candidate(tmp_path, caplog):
    """A preset's warmup longer than its run on small data: the trainer's warning came once per
    model trained, i.e. once per candidate scored from scratch (thousands at the gpu budget)."""
    import logging

    with caplog.at_level(logging.WARNING, logger="recnas.train"):
        run_job(load_job_config("smoke", scoring="scratch", baselines=["lr"], final={"warmup_steps": 1000}), tmp_path / "run", progress=False)
    warned = [r.getMessage() for r in caplog.records if "outlasts" in r.getMessage()]
    assert warned == ["warmup_steps (1000) outlasts this run's 9 steps: the lr never reaches 0.003 (it ends at 0.9% of it)"]
    assert not logging.getLogger("recnas.train").filters  # the job's alone


def test_a_search_whose_best_candidate_is_above_the_base_rate_says_so(tmp_path, monkeypatch, capsys):
    """A fine-tune at lr 1e3 left candidates with finite but useless weights: the job said "best
    candidate ...: val log loss 11.0534" (against 0.62 for predicting the click rate) and went
    on without a word that the search had ranked noise."""
    from rich.console import Console

    from recnas.search import evaluator

    real = evaluator.CandidateEvaluator.__call__
    monkeypatch.setattr(evaluator.CandidateEvaluator, "__call__", lambda self, geno: {**real(self, geno), "logloss": 11.0 + int(geno.key[-1], 16)})
    run_job(load_job_config("smoke", scoring="scratch", baselines=[]), tmp_path / "run", progress=False, console=Console(file=None, soft_wrap=True))
    printed = capsys.readouterr().out
    assert re.search(r"warning: the best candidate's validation log loss \(1\d\.0000\) is above that of predicting the training click rate for every row \(0\.\d{4}\): "
                     r"the candidates learnt nothing usable in their training from scratch \(final with proxy\), so the search ranked noise", printed), printed
    monkeypatch.setattr(evaluator.CandidateEvaluator, "__call__", real)
    run_job(load_job_config("smoke", scoring="scratch", baselines=[]), tmp_path / "fine", progress=False, console=Console(file=None, soft_wrap=True))
    assert "predicting the training click rate" not in capsys.readouterr().out


@pytest.mark.parametrize("scratch", [False, True])
def test_a_candidate_is_scored_on_the_first_eval_rows_of_the_validation_split(tiny_store, scratch):
    import torch

    from recnas.supernet import Supernet
    from recnas.train import Trainer, evaluate

    space = get_space("full-tiny")
    geno = Genotype(random_architecture(np.random.default_rng(0), space))
    cfg = TrainConfig(batch_size=64, max_steps=2, eval_every=0, device="cpu", seed=3)
    if scratch:
        ev = CandidateEvaluator(space, tiny_store, cfg, eval_rows=25)
    else:
        torch.manual_seed(0)
        ev = CandidateEvaluator(space, tiny_store, eval_rows=25, supernet=Supernet(space, tiny_store.meta))
    got = ev(geno)
    model = ev.subnet(geno)  # the candidate again: inherited, or built afresh from the seed and trained alike
    if scratch:
        Trainer(model, cfg, tiny_store, progress=False).fit()
    val = tiny_store.split("val")
    assert got["logloss"] == evaluate(model, val, max_rows=25)["logloss"] != evaluate(model, val)["logloss"]


def test_a_codesign_candidate_is_keyed_costed_and_scored_with_its_hardware(tiny_store):
    import torch

    from recnas.hardware import PIMConfig
    from recnas.hardware.quant import quantized
    from recnas.supernet import Supernet
    from recnas.train import evaluate

    space = get_space("full-tiny")
    arch = random_architecture(np.random.default_rng(0), space)
    coarse = PIMConfig(weight_bits=4, act_bits=4, adc_bits=4)
    genos = [Genotype(arch), Genotype(arch, coarse), Genotype(arch, PIMConfig())]
    assert len({g.key for g in genos}) == 3  # one architecture on two chips: two candidates, neither taken for the other
    torch.manual_seed(0)
    ev = CandidateEvaluator(space, tiny_store, eval_rows=None, supernet=Supernet(space, tiny_store.meta))
    plain, low, high = (ev(g) for g in genos)
    assert "energy" not in plain and low["energy"] != high["energy"]
    model = ev.subnet(genos[1])
    with quantized(model, coarse):
        want = evaluate(model, tiny_store.split("val"))
    assert low["logloss"] == want["logloss"] != plain["logloss"]
