"""`recnas study rank`: correlations, and the from-scratch cache that studies share."""

import json
import math

import pytest

from recnas.errors import ConfigError, TrainingDiverged
from recnas.search.study import RankStudyConfig, ScratchCache, run_rank_study
from recnas.space import get_space
from recnas.space.samplers import ArchSampler
from recnas.supernet import Supernet
from recnas.train import Trainer, TrainConfig
from recnas.train.model_factory import supernet_spec

CPU = dict(device="cpu", eval_every=0)


def _supernet(store, out, seed):
    space = get_space("small-tiny")
    net = Supernet(space, store.meta)
    cfg = TrainConfig(batch_size=64, max_steps=4, seed=seed, **CPU)
    Trainer(net, cfg, store, out_dir=out, sampler=ArchSampler(space, seed=seed), model_spec=supernet_spec(space, store.meta), progress=False).fit()
    return out / "model.pt"


def _config(**kw):
    return RankStudyConfig(
        finetune=TrainConfig(batch_size=64, max_steps=2, restore_best=False, **CPU),
        scratch=TrainConfig(batch_size=64, max_steps=6, **CPU), eval_rows=100, **kw,
    )


def test_second_study_reuses_scratch_results_and_keeps_other_entries(tiny_store, tmp_path, monkeypatch):
    a, b = _supernet(tiny_store, tmp_path / "a", 0), _supernet(tiny_store, tmp_path / "b", 1)
    cache = tmp_path / "scratch.json"
    cache.write_text(json.dumps({"other-fingerprint": {"x": 0.5}}))
    first = run_rank_study(a, tiny_store.dir, 4, tmp_path / "study-a", _config(), progress=False, scratch_cache=cache)
    assert first["scratch_reused"] == 0 and first["n"] >= 3
    assert (tmp_path / "study-a" / "rank_study.png").exists()

    real_fit = Trainer.fit

    def fit(self, *args, **kwargs):  # fine-tunes (2 steps) still run; a from-scratch run (6) must not
        assert self.cfg.max_steps != 6, "a cached subnet was trained from scratch again"
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", fit)
    second = run_rank_study(b, tiny_store.dir, 4, tmp_path / "study-b", _config(), progress=False, scratch_cache=cache)
    assert second["scratch_reused"] == second["n"] == first["n"]
    assert [r["scratch"] for r in second["rows"]] == [r["scratch"] for r in first["rows"]]
    assert [r["inherited"] for r in second["rows"]] != [r["inherited"] for r in first["rows"]]  # another supernet
    assert json.loads(cache.read_text())["other-fingerprint"] == {"x": 0.5}
    assert second["best_scratch"]["logloss"] == min(r["scratch"] for r in first["rows"])


def test_changed_scratch_config_does_not_reuse(tiny_store, tmp_path):
    a = _supernet(tiny_store, tmp_path / "a", 0)
    run_rank_study(a, tiny_store.dir, 3, tmp_path / "s", _config(), progress=False)
    cfg = _config()
    cfg.scratch = TrainConfig(batch_size=64, max_steps=7, **CPU)
    again = run_rank_study(a, tiny_store.dir, 3, tmp_path / "s", cfg, progress=False, overwrite=True)  # replaces the finished study, keeps its cache
    assert again["scratch_reused"] == 0
    assert len(json.loads((tmp_path / "s" / "scratch_cache.json").read_text())) == 2  # both fingerprints kept


def test_corrupt_cache_is_a_clear_error_and_left_alone(tiny_store, tmp_path):
    a = _supernet(tiny_store, tmp_path / "a", 0)
    cache = tmp_path / "s" / "scratch_cache.json"
    cache.parent.mkdir()
    cache.write_text("{not json")
    with pytest.raises(ConfigError, match="scratch cache"):
        run_rank_study(a, tiny_store.dir, 3, tmp_path / "s", _config(), progress=False)
    assert cache.read_text() == "{not json"


@pytest.mark.parametrize("value", ['"NaN"', "null", '"0.45"', "NaN", "Infinity", "true", "[0.5]"])
def test_non_numeric_cached_result_is_a_clear_error(tmp_path, value):
    """A hand-edited or foreign entry would otherwise be used as a from-scratch score."""
    cache = tmp_path / "scratch_cache.json"
    text = '{"fp": {"good": 0.5}, "other": {"arch1": %s}}' % value
    cache.write_text(text)
    with pytest.raises(ConfigError, match=r"scratch_cache.json: unreadable scratch cache \(entry other/arch1 is .*not a finite log loss\)") as info:
        ScratchCache(cache, "fp")
    assert "\n" not in str(info.value) and cache.read_text() == text
    cache.write_text('{"fp": {"good": 0.5, "int": 1}}')
    assert ScratchCache(cache, "fp").get("good") == 0.5  # numbers still load


def test_unreadable_cache_file_is_a_clear_error(tmp_path):
    (tmp_path / "scratch_cache.json").mkdir()  # e.g. a folder where the file should be
    with pytest.raises(ConfigError, match="scratch_cache.json: cannot read scratch cache"):
        ScratchCache(tmp_path / "scratch_cache.json", "fp")


def _diverge_scratch_runs(monkeypatch, count, how):
    """The next `count` from-scratch runs (6 steps) diverge: the trainer stops them ("raise"),
    they end with NaN weights ("nan", a last step's update the loss check cannot see), or with
    finite weights far from any solution ("blowup")."""
    real_fit, left = Trainer.fit, [count]

    def fit(self, *args, **kwargs):
        if self.cfg.max_steps != 6 or left[0] == 0:
            return real_fit(self, *args, **kwargs)
        left[0] -= 1
        if how == "raise":
            raise TrainingDiverged("training diverged: loss nan at step 3")
        result = real_fit(self, *args, **kwargs)
        for p in self.model.parameters():
            p.data.fill_(float("nan") if how == "nan" else 3.0)  # "blowup": finite, and far off
        return result

    monkeypatch.setattr(Trainer, "fit", fit)


def test_diverged_scratch_run_is_left_out_and_not_cached(tiny_store, tmp_path, monkeypatch):
    a, cache = _supernet(tiny_store, tmp_path / "a", 0), tmp_path / "scratch.json"
    _diverge_scratch_runs(monkeypatch, 1, "nan")
    first = run_rank_study(a, tiny_store.dir, 4, tmp_path / "s", _config(), progress=False, scratch_cache=cache)
    assert len(first["diverged"]) == 1 and first["diverged"][0] not in [r["arch"] for r in first["rows"]]
    assert first["correlation"]["inherited"]["n"] == first["n"] == len(first["rows"])
    ScratchCache(cache, "any")  # still loads: the NaN was never written
    (entries,) = json.loads(cache.read_text()).values()
    assert sorted(entries) == sorted(r["arch"] for r in first["rows"])
    monkeypatch.undo()
    second = run_rank_study(a, tiny_store.dir, 4, tmp_path / "s", _config(), progress=False, scratch_cache=cache, overwrite=True)
    assert second["diverged"] == [] and second["scratch_reused"] == first["n"] and second["n"] == first["n"] + 1  # retrained


def test_study_with_under_two_finite_scratch_runs_fails_clearly(tiny_store, tmp_path, monkeypatch):
    a = _supernet(tiny_store, tmp_path / "a", 0)
    _diverge_scratch_runs(monkeypatch, 99, "raise")
    with pytest.raises(ConfigError, match=r"(\d) of \1 subnets diverged in from-scratch training, leaving 0 to correlate"):
        run_rank_study(a, tiny_store.dir, 3, tmp_path / "s", _config(), progress=False)
    assert not (tmp_path / "s" / "rank_study.json").exists()
    with pytest.raises(ValueError, match="not a finite number"):  # the writer refuses what the reader would
        ScratchCache(tmp_path / "c.json", "fp").put("arch", float("nan"))
    assert not (tmp_path / "c.json").exists()


def test_nan_supernet_scores_are_null_in_strict_json(tiny_store, tmp_path, monkeypatch):
    """A supernet whose weights give NaN logits (e.g. one trained to divergence) must not write
    `NaN` into rank_study.json, which strict JSON readers (jq, JSON.parse) reject."""
    from recnas.search import study

    a = _supernet(tiny_store, tmp_path / "a", 0)
    scratch = study.CandidateEvaluator.__call__  # the from-scratch side scores as usual
    monkeypatch.setattr(study.CandidateEvaluator, "__call__", lambda self, g: {"logloss": float("nan")} if self.supernet is not None else scratch(self, g))
    result = run_rank_study(a, tiny_store.dir, 3, tmp_path / "s", _config(), progress=False)
    text = (tmp_path / "s" / "rank_study.json").read_text()
    written = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} written"))
    assert all(r["inherited"] is None and r["finetuned"] is None for r in written["rows"])
    assert written["correlation"]["inherited"]["kendall_tau"] is None and written["correlation"]["inherited"]["n"] == 0
    assert all(isinstance(r["scratch"], float) for r in written["rows"]) and result["n"] == len(written["rows"]) >= 2


def test_two_studies_sharing_a_cache_keep_each_others_results(tmp_path):
    """Each study writes its in-memory cache back: without merging on write, the second
    study's write erased what the first had added since the second read the file."""
    path = tmp_path / "shared.json"
    first, second = ScratchCache(path, "fp-a"), ScratchCache(path, "fp-b")  # both read the empty cache
    first.put("arch1", 0.5)
    second.put("arch2", 0.6)
    first.put("arch3", 0.7)
    assert json.loads(path.read_text()) == {"fp-a": {"arch1": 0.5, "arch3": 0.7}, "fp-b": {"arch2": 0.6}}
    assert second.get("arch2") == 0.6 and first.get("arch1") == 0.5
    assert not (tmp_path / ".shared.json.lock").exists()


def test_an_out_that_is_a_file_is_refused_before_any_training(tiny_store, tmp_path, monkeypatch):
    """It used to train and score subnets, then fail with a bare "File exists" at the first cached result."""
    net = _supernet(tiny_store, tmp_path / "sn", 0)
    afile = tmp_path / "afile"
    afile.write_text("keep")
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained although --out is unusable"))
    with pytest.raises(ConfigError, match=f"--out {afile} exists and is not a directory"):
        run_rank_study(net, tiny_store.dir, 3, afile, _config(), progress=False)
    assert afile.read_text() == "keep"


@pytest.mark.parametrize("where", ["in the store", "in an embed search result", "below a file"])
def test_unusable_scratch_cache_path_is_refused_before_any_training(tiny_store, tmp_path, monkeypatch, where):
    """--scratch-cache in the data store wrote cache.json there (the store's --overwrite then
    refused it), as in an embed search result; below a file it failed only after the first
    from-scratch run, "File exists"."""
    net = _supernet(tiny_store, tmp_path / "sn", 0)
    afile = tmp_path / "afile"
    afile.write_text("keep")
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "result.json").write_text("{}")
    cache = {"in the store": tiny_store.dir, "in an embed search result": tmp_path / "emb", "below a file": afile}[where] / "cache.json"
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained although --scratch-cache is unusable"))
    with pytest.raises(ConfigError, match="--scratch-cache"):
        run_rank_study(net, tiny_store.dir, 3, tmp_path / "s", _config(), progress=False, scratch_cache=cache)
    assert not cache.exists() and afile.read_text() == "keep"
    assert sorted(p.name for p in tiny_store.dir.iterdir()) == ["meta.json", "test", "train", "val"]


def test_scratch_runs_worse_than_the_base_rate_are_named(tiny_store, tmp_path, monkeypatch, capsys):
    """A from-scratch run that ends above the log loss of predicting the click rate is finite,
    so it is not 'diverged', but its rank means nothing: the study names it, and the CLI warns."""
    import numpy as np

    from recnas.data.store import CTRStore
    from recnas.search.study import base_rate_logloss

    a = _supernet(tiny_store, tmp_path / "a", 0)
    _diverge_scratch_runs(monkeypatch, 1, "blowup")
    result = run_rank_study(a, tiny_store.dir, 4, tmp_path / "s", _config(), progress=False)
    store = CTRStore(tiny_store.dir)
    p, y = store.split("train").label.mean(), store.split("val").label[:100].astype(float)
    assert result["base_rate_logloss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    bad = [r["arch"] for r in result["rows"] if r["scratch"] > result["base_rate_logloss"]]
    assert len(bad) >= 1 and result["worse_than_base_rate"] == bad
    assert json.loads((tmp_path / "s" / "rank_study.json").read_text())["worse_than_base_rate"] == bad
    assert base_rate_logloss(np.array([0, 1]), np.array([0, 1])) == pytest.approx(np.log(2))
    # the CLI on the same cache (the far-off result is cached: it is finite) prints the warning
    import yaml

    from tests.test_cli_models import run as cli

    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(yaml.safe_dump(json.loads(_config().model_dump_json())))
    monkeypatch.undo()
    code, out, err = cli(monkeypatch, capsys, "study", "rank", "--supernet", a, "--data", tiny_store.dir, "--n", "4",
                         "--out", tmp_path / "s2", "--config", cfg_file, "--scratch-cache", tmp_path / "s" / "scratch_cache.json", "--no-progress")
    assert code == 0, err
    assert f"{len(bad)} of {result['n']} subnet(s) ended their from-scratch training above the log loss of predicting the click rate" in " ".join(out.split())


def test_base_rate_of_a_train_split_of_one_class_is_exact():
    """It was clipped to 1e-7: an all-zero train split gave 1e-7 on an all-zero validation split
    and 16 x the positive rate on one with clicks, numbers of the clip, not the data."""
    import numpy as np

    from recnas.search.study import base_rate_logloss

    zeros, ones, mixed = np.zeros(8, np.float32), np.ones(8, np.float32), np.array([0, 1, 0, 0], np.float32)
    assert base_rate_logloss(zeros, zeros) == 0.0 and base_rate_logloss(ones, ones) == 0.0
    assert base_rate_logloss(zeros, mixed) == math.inf and base_rate_logloss(ones, mixed) == math.inf
    assert base_rate_logloss(np.array([0, 0, 0, 1], np.float32), mixed) == pytest.approx(-(0.25 * np.log(0.25) + 0.75 * np.log(0.75)))


def test_study_scores_from_scratch_as_the_search_does(tiny_store, tmp_path):
    """The study measures the ranker the search uses (`scoring: scratch`): its from-scratch
    score of an architecture is the search's `CandidateEvaluator` score, to the last bit,
    whatever ran before it."""
    from recnas.search.evaluator import CandidateEvaluator, Genotype
    from recnas.space.samplers import distinct_random_architectures

    a = _supernet(tiny_store, tmp_path / "a", 0)
    cfg = _config(seed=1)  # picks the architectures; the scratch config's own seed (0) seeds their runs
    result = run_rank_study(a, tiny_store.dir, 3, tmp_path / "s", cfg, progress=False)
    cache = json.loads((tmp_path / "s" / "scratch_cache.json").read_text())
    (archs,) = cache.values()
    space = get_space("small-tiny")
    search = CandidateEvaluator(space, tiny_store, cfg.scratch, cfg.eval_rows, "cpu")
    listed = {r["arch"]: r["scratch"] for r in result["rows"]}
    for arch in distinct_random_architectures(cfg.seed, space, 3):
        assert search(Genotype(arch))["logloss"] == listed[arch.hash] == archs[arch.hash]


def test_a_space_of_one_architecture_is_refused_before_any_training(tiny_store, tmp_path, monkeypatch):
    """Every random subnet of such a space is the same one: the study trained it from scratch,
    then failed with "0 of 1 subnets diverged ... lower the scratch lr", which was not the cause."""
    space = get_space("small-tiny", n_blocks=1, sparse_ops=("efc",), dense_dims=(8,), sparse_dims=(4,))
    net, out = Supernet(space, tiny_store.meta), tmp_path / "sn"
    Trainer(net, TrainConfig(batch_size=64, max_steps=2, **CPU), tiny_store, out_dir=out, sampler=ArchSampler(space), model_spec=supernet_spec(space, tiny_store.meta), progress=False).fit()
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained although the study cannot rank anything"))
    with pytest.raises(ConfigError, match=r"the space of .* holds one architecture \(500 random draws found no other\)") as exc:
        run_rank_study(out / "model.pt", tiny_store.dir, 5, tmp_path / "s", _config(), progress=False)
    assert "diverged" not in str(exc.value)
    assert not (tmp_path / "s" / "scratch_cache.json").exists()


def test_repeated_draws_are_drawn_again_until_n_distinct_subnets():
    """`--n N` studied fewer than N subnets whenever random draws repeated an architecture
    (`n` in the result said so, the command did not); repeats are now drawn again, and the
    first draws stay the subnets an earlier study of the same seed had."""
    import numpy as np
    from recnas.space.samplers import distinct_random_architectures, random_architecture

    space = get_space("small-tiny", n_blocks=2, dense_dims=(8,), sparse_dims=(4,))  # 36 architectures
    first = [random_architecture(np.random.default_rng(0), space) for _ in range(1)]
    rng = np.random.default_rng(0)
    draws = [random_architecture(rng, space).hash for _ in range(12)]
    assert len(set(draws)) < 12  # the old way: 12 draws, fewer distinct subnets
    archs = distinct_random_architectures(0, space, 12)
    assert len({a.hash for a in archs}) == len(archs) == 12
    assert [a.hash for a in archs][: len(dict.fromkeys(draws))] == list(dict.fromkeys(draws))
    assert archs[0].hash == first[0].hash


def test_a_space_smaller_than_n_studies_all_it_holds(tiny_store, tmp_path, caplog):
    """A space with fewer architectures than --n: every one is studied, and the log says so."""
    space = get_space("small-tiny", n_blocks=1, sparse_ops=("efc", "dot"), dense_ops=("fc",), dense_dims=(8,), sparse_dims=(4,))
    from recnas.space.samplers import distinct_random_architectures, random_architecture
    import numpy as np

    rng = np.random.default_rng(1)
    every = {random_architecture(rng, space).hash for _ in range(2000)}
    assert 2 <= len(every) < 6
    assert {a.hash for a in distinct_random_architectures(1, space, 6)} == every
    net, out = Supernet(space, tiny_store.meta), tmp_path / "sn"
    Trainer(net, TrainConfig(batch_size=64, max_steps=2, **CPU), tiny_store, out_dir=out, sampler=ArchSampler(space), model_spec=supernet_spec(space, tiny_store.meta), progress=False).fit()
    with caplog.at_level("WARNING", logger="recnas.search"):
        result = run_rank_study(out / "model.pt", tiny_store.dir, 6, tmp_path / "s", _config(), progress=False)
    assert result["distinct_subnets"] == result["n"] == len(every)
    assert f"holds {len(every)} distinct architectures" in caplog.text and "not --n 6" in caplog.text


def test_cli_threads_pins_and_records_the_thread_count(tiny_store, tmp_path, monkeypatch, capsys):
    """`--threads` pins the CPU threads of the study's trainings (their count changes the
    rounding, and so the scores) and rank_study.json records the count they ran with."""
    import torch
    import yaml

    from tests.test_cli_models import run as cli

    a = _supernet(tiny_store, tmp_path / "a", 0)
    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(yaml.safe_dump(json.loads(_config().model_dump_json())))
    before = torch.get_num_threads()
    code, _, err = cli(monkeypatch, capsys, "study", "rank", "--supernet", a, "--data", tiny_store.dir, "--n", "3", "--out", tmp_path / "s", "--config", cfg_file, "--no-progress", "--threads", "1")
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "rank_study.json").read_text())["environment"]["cpu_threads"] == 1
    assert torch.get_num_threads() == before


def test_cli_device_overrides_the_device_of_both_sections(tiny_store, tmp_path, monkeypatch, capsys):
    """`study rank` fine-tunes and trains from scratch where its config's sections say: one of
    `device: cuda` ran only where CUDA was. `--device cpu` overrides both, as in the training
    commands, and rank_study.json records it."""
    import torch
    import yaml

    from tests.test_cli_models import error_line
    from tests.test_cli_models import run as cli

    a = _supernet(tiny_store, tmp_path / "a", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = json.loads(_config().model_dump_json())
    for section in ("finetune", "scratch"):
        cfg[section]["device"] = "cuda"
    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    study = ("study", "rank", "--supernet", a, "--data", tiny_store.dir, "--n", "3", "--config", cfg_file, "--no-progress")
    code, _, err = cli(monkeypatch, capsys, *study, "--out", tmp_path / "cuda")
    assert code == 2 and "device: 'cuda' requested but no CUDA device" in error_line(err)
    code, _, err = cli(monkeypatch, capsys, *study, "--out", tmp_path / "cpu", "--device", "cpu")
    assert code == 0, err
    written = json.loads((tmp_path / "cpu" / "rank_study.json").read_text())
    assert (written["config"]["finetune"]["device"], written["config"]["scratch"]["device"], written["environment"]["device"]) == ("cpu", "cpu", "cpu")


def test_an_undefined_correlation_reads_n_a(tmp_path, monkeypatch, capsys):
    """Scores all alike (or none finite) have no rank correlation: the CLI printed
    "Kendall tau +nan  Spearman +nan" and the plot's legend "tau=nan", where every other
    command prints an undefined metric as n/a."""
    from recnas.search import rank as rank_mod
    from recnas.search import study
    from tests.test_cli_models import run as cli

    nan = {"kendall_tau": math.nan, "spearman": math.nan, "n": 3}
    result = {"correlation": {"inherited": nan, "finetuned": {"kendall_tau": 0.5, "spearman": -0.25, "n": 3}}, "best_scratch": {"arch": "a", "logloss": 0.5},
              "diverged": [], "worse_than_base_rate": [], "n": 3, "scratch_reused": 0}
    monkeypatch.setattr(study, "run_rank_study", lambda *a, **k: result)
    code, out, err = cli(monkeypatch, capsys, "study", "rank", "--supernet", tmp_path / "s.pt", "--data", tmp_path, "--out", tmp_path / "o", "--no-progress")
    assert code == 0, err
    assert "inherited: Kendall tau n/a  Spearman n/a  (n=3)" in out and "finetuned: Kendall tau +0.500  Spearman -0.250" in out and "nan" not in out
    figs = []
    monkeypatch.setattr(rank_mod, "save_figure", lambda fig, path: figs.append(fig))
    rank_mod.scatter_plot(tmp_path / "r.png", [0.5, 0.5, 0.5], {"inherited": [0.4, 0.5, 0.6]})
    assert [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()] == ["inherited (tau=n/a, rho=n/a)"]


def test_a_finished_study_is_kept_unless_overwrite_and_an_interrupted_one_goes_on(tiny_store, tmp_path, monkeypatch):
    """A second study into the --out of a finished one (another supernet, seed or config)
    replaced its rank_study.json and .png without a word; it is refused before any training,
    naming --overwrite. An interrupted study (its cache, no results yet) still goes on where it
    stopped, and --overwrite replaces the results but keeps the from-scratch cache."""
    a, out = _supernet(tiny_store, tmp_path / "a", 0), tmp_path / "s"
    first = run_rank_study(a, tiny_store.dir, 3, out, _config(), progress=False)
    kept = {name: (out / name).read_bytes() for name in ("rank_study.json", "rank_study.png")}
    real_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained although --out holds a finished study"))
    with pytest.raises(ConfigError, match=r"already holds a finished rank study \(rank_study.json and rank_study.png\); pass --overwrite to replace it") as info:
        run_rank_study(a, tiny_store.dir, 3, out, _config(seed=1), progress=False)
    assert "\n" not in str(info.value)
    assert {name: (out / name).read_bytes() for name in kept} == kept
    (out / "rank_study.png").unlink()  # the results alone are a finished study's too
    with pytest.raises(ConfigError, match=r"\(rank_study.json\); pass --overwrite"):
        run_rank_study(a, tiny_store.dir, 3, out, _config(), progress=False)
    monkeypatch.setattr(Trainer, "fit", real_fit)
    again = run_rank_study(a, tiny_store.dir, 3, out, _config(), progress=False, overwrite=True)
    assert again["scratch_reused"] == first["n"] and again["rows"] == first["rows"]  # the cache was kept
    assert json.loads((out / "rank_study.json").read_text())["rows"] == first["rows"]
    for name in kept:  # interrupted before its results: run again, it goes on from its cache
        (out / name).unlink()
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: real_fit(self, *a, **k) if self.cfg.max_steps != 6 else pytest.fail("a cached subnet was trained from scratch again"))
    resumed = run_rank_study(a, tiny_store.dir, 3, out, _config(), progress=False)
    assert resumed["scratch_reused"] == first["n"] and (out / "rank_study.json").is_file()


def test_cli_seed_overrides_the_config_and_overwrite_replaces_a_finished_study(tiny_store, tmp_path, monkeypatch, capsys):
    """`study rank` took its seed from --config alone, and had no --overwrite: --seed wins over
    the config's seed (the random subnets drawn), as in the training commands; a finished
    study's --out is one error line naming --overwrite, which replaces it."""
    import yaml

    from recnas.space.samplers import distinct_random_architectures
    from tests.test_cli_models import error_line
    from tests.test_cli_models import run as cli

    a, out = _supernet(tiny_store, tmp_path / "a", 0), tmp_path / "s"
    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(yaml.safe_dump(json.loads(_config().model_dump_json())))  # seed: 0
    study = ("study", "rank", "--supernet", a, "--data", tiny_store.dir, "--n", "3", "--out", out, "--config", cfg_file, "--no-progress")
    code, _, err = cli(monkeypatch, capsys, *study, "--seed", "1")
    assert code == 0, err

    def written():
        return json.loads((out / "rank_study.json").read_text())

    space = get_space("small-tiny")
    assert {x.hash for x in distinct_random_architectures(1, space, 3)} != {x.hash for x in distinct_random_architectures(0, space, 3)}
    assert written()["config"]["seed"] == 1
    assert sorted(r["arch"] for r in written()["rows"]) == sorted(x.hash for x in distinct_random_architectures(1, space, 3))
    before = (out / "rank_study.json").read_bytes()
    code, _, err = cli(monkeypatch, capsys, *study)
    assert code == 2 and "pass --overwrite to replace it" in error_line(err)
    assert (out / "rank_study.json").read_bytes() == before
    code, _, err = cli(monkeypatch, capsys, *study, "--overwrite")
    assert code == 0, err
    assert written()["config"]["seed"] == 0
    assert sorted(r["arch"] for r in written()["rows"]) == sorted(x.hash for x in distinct_random_architectures(0, space, 3))


def test_above_base_rate_is_strictly_above_a_base_that_judges():
    """above_base_rate: a finite float strictly above a base in (0, inf); equal to it is not
    above, and a base of 0 or inf (a one-class split) judges nothing."""
    from recnas.search.study import above_base_rate

    assert above_base_rate(0.6, 0.5) and not above_base_rate(0.5, 0.5) and not above_base_rate(0.4, 0.5)
    assert not above_base_rate(0.5, 0.0) and not above_base_rate(0.5, math.inf)
    assert not above_base_rate(math.inf, 0.5) and not above_base_rate(float("nan"), 0.5) and not above_base_rate(1, 0.5)


def test_store_base_rate_scores_the_first_rows_of_the_split_against_the_train_rate():
    """store_base_rate: the train split's click rate (1/4 here) scored on the first `rows` labels
    of the split (two clicks: -log(1/4)), or on all of them with rows None."""
    from types import SimpleNamespace

    import numpy as np

    from recnas.search.study import store_base_rate

    labels = {"train": np.array([1, 0, 0, 0], np.float32), "val": np.array([1, 1, 0, 0, 0, 0], np.float32)}
    store = SimpleNamespace(split=lambda name: SimpleNamespace(label=labels[name]))
    assert store_base_rate(store, "val", 2) == pytest.approx(-np.log(0.25))
    assert store_base_rate(store, "val") == pytest.approx(-(2 * np.log(0.25) + 4 * np.log(0.75)) / 6)


def test_scratch_fingerprint_covers_every_input_but_the_architecture():
    """scratch_fingerprint: 16 hex digits, the same for the same inputs, and another one when
    the data, the space, the scratch config, eval_rows or the seed differ."""
    from types import SimpleNamespace

    from recnas.search.study import scratch_fingerprint

    def dumped(value):
        return SimpleNamespace(model_dump=lambda mode=None: value)

    meta, space, cfg = dumped({"name": "a"}), dumped({"blocks": 2}), RankStudyConfig()
    base = scratch_fingerprint(meta, space, cfg)
    assert len(base) == 16 and int(base, 16) >= 0 and base == scratch_fingerprint(meta, space, RankStudyConfig())
    others = [
        scratch_fingerprint(dumped({"name": "b"}), space, cfg), scratch_fingerprint(meta, dumped({"blocks": 3}), cfg),
        scratch_fingerprint(meta, space, RankStudyConfig(seed=1)), scratch_fingerprint(meta, space, RankStudyConfig(eval_rows=10)),
        scratch_fingerprint(meta, space, RankStudyConfig(scratch=TrainConfig(batch_size=256, epochs=1, lr=2e-3))),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_a_study_left_with_one_finite_scratch_run_fails_clearly(tiny_store, tmp_path, monkeypatch):
    """One subnet left to correlate (2 of 3 diverged) is refused as none is: a rank correlation
    of one point means nothing."""
    a = _supernet(tiny_store, tmp_path / "a", 0)
    _diverge_scratch_runs(monkeypatch, 2, "raise")
    with pytest.raises(ConfigError, match=r"2 of 3 subnets diverged in from-scratch training, leaving 1 to correlate \(at least 2 needed\)"):
        run_rank_study(a, tiny_store.dir, 3, tmp_path / "s", _config(), progress=False)
    assert not (tmp_path / "s" / "rank_study.json").exists()


def test_a_dangling_link_of_a_finished_studys_file_counts_as_finished(tmp_path):
    """The finished-study check looks at the names themselves (os.path.lexists): a rank_study.json
    that is a link to nothing is still refused without --overwrite (replacing it would replace the link)."""
    out = tmp_path / "s"
    out.mkdir()
    (out / "rank_study.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(ConfigError, match=r"already holds a finished rank study \(rank_study.json\)"):
        run_rank_study(tmp_path / "no-supernet.pt", tmp_path / "no-data", 3, out, _config(), progress=False)


def test_a_study_killed_while_writing_its_plot_or_results_goes_on_and_a_finished_one_without_its_plot_is_kept(tiny_store, tmp_path, monkeypatch):
    """A study wrote rank_study.json, then drew rank_study.png (matplotlib's import and the
    drawing: about a second). Killed in between (found by killing `recnas study rank` at random
    moments), the same command run again was refused as a finished study ("already holds a
    finished rank study (rank_study.json); pass --overwrite"), and the plot was never drawn. The
    results are written last now: a study killed before them goes on (its from-scratch results
    all come from the cache) and writes both; results whose plot was removed are still a finished
    study, refused without --overwrite."""
    import recnas.search.study as study

    a, out = _supernet(tiny_store, tmp_path / "a", 0), tmp_path / "s"
    real_plot = study.scatter_plot

    def killed(*args, **kwargs):
        real_plot(*args, **kwargs)
        raise KeyboardInterrupt  # as a kill right after the plot leaves it: no results yet

    monkeypatch.setattr(study, "scatter_plot", killed)
    with pytest.raises(KeyboardInterrupt):
        run_rank_study(a, tiny_store.dir, 3, out, _config(), progress=False)
    assert (out / "rank_study.png").is_file() and not (out / "rank_study.json").exists()
    monkeypatch.setattr(study, "scatter_plot", real_plot)
    real_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: real_fit(self, *a, **k) if self.cfg.max_steps != 6 else pytest.fail("a cached subnet was trained from scratch again"))
    again = run_rank_study(a, tiny_store.dir, 3, out, _config(), progress=False)
    assert json.loads((out / "rank_study.json").read_text())["rows"] == again["rows"] and again["scratch_reused"] == again["n"] == 3
    with pytest.raises(ConfigError, match=r"already holds a finished rank study \(rank_study.json and rank_study.png\)"):
        run_rank_study(a, tiny_store.dir, 3, out, _config(), progress=False)
    (out / "rank_study.png").unlink()
    kept = (out / "rank_study.json").read_text()
    with pytest.raises(ConfigError, match=r"already holds a finished rank study \(rank_study.json\)"):
        run_rank_study(a, tiny_store.dir, 3, out, _config(), progress=False)
    assert (out / "rank_study.json").read_text() == kept


def test_a_study_removes_the_temp_files_a_hard_kill_left_in_its_out(tiny_store, tmp_path):
    """A hard kill (SIGKILL, SIGTERM) while the study writes its cache, its json or its plot
    leaves that write's hidden temp file (`.scratch_cache.json.tmp-xxxxxxxx`) in --out; the
    study run again went on and finished, but left it there for good (the training commands and
    the search job delete them)."""
    a, out = _supernet(tiny_store, tmp_path / "a", 0), tmp_path / "s"
    out.mkdir()
    stale = [out / ".scratch_cache.json.tmp-0123abcd", out / ".rank_study.png.tmp-89abcdef"]
    for p in stale:
        p.write_text("half written")
    keep = out / "notes.tmp-0123abcd"  # not a name of ours
    keep.write_text("mine")
    run_rank_study(a, tiny_store.dir, 3, out, _config(), progress=False)
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"
    assert (out / "rank_study.png").is_file()
