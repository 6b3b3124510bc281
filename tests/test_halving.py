"""Successive halving over the finalists: the rung logic on hand-made scores, and the main job
with `finalist_selection: halving` (smoke budget)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from recnas.data.store import CTRStore
from recnas.errors import ConfigError
from recnas.search.halving import successive_halving
from recnas.search.job import load_job_config
from recnas.search.finalists import rung_score
from recnas.search.fitting import fit_or_load, subnet_builder
from recnas.search.pipeline import run_job
from recnas.space import Architecture, get_space


def scripted(scores: dict[str, list[float]]):
    """advance() that returns scores[key][rung - 1] and logs every call."""
    calls = []

    def advance(key, rung):
        calls.append((key, rung))
        return scores[key][rung - 1]

    return advance, calls


def test_each_rung_keeps_the_better_half_until_one_is_left():
    # 5 -> 3 -> 2 -> 1; a trails b after rung 1 but overtakes it; c and e (0.1 later) never get the chance
    scores = {"a": [0.50, 0.45, 0.44], "b": [0.49, 0.47, 0.46], "c": [0.60, 0.1, 0.1], "d": [0.55, 0.56, 0.1], "e": [0.58, 0.1, 0.1]}
    advance, calls = scripted(scores)
    survivor, dropped = successive_halving(["a", "b", "c", "d", "e"], advance)
    assert survivor == "a"
    assert [(d["key"], d["rung"], d["val_logloss"]) for d in dropped] == [("e", 1, 0.58), ("c", 1, 0.60), ("d", 2, 0.56), ("b", 3, 0.46)]
    # 5 + 3 + 2 rung trainings: a dropped key is never trained again
    assert calls == [(k, 1) for k in "abcde"] + [("b", 2), ("a", 2), ("d", 2), ("a", 3), ("b", 3)]


def test_a_later_rung_can_overturn_the_first_ranking():
    advance, _ = scripted({"a": [0.50, 0.49], "b": [0.51, 0.40]})
    assert successive_halving(["a", "b"], advance)[0] == "a"  # two keys: one rung decides
    advance, _ = scripted({"a": [0.50, 0.49, 0.49], "b": [0.51, 0.40, 0.40], "c": [0.52, 0.1, 0.1]})
    assert successive_halving(["a", "b", "c"], advance)[0] == "b"  # a and b survive rung 1; b wins rung 2


def test_ties_keep_the_better_search_rank_and_bad_inputs_are_refused():
    advance, _ = scripted({"x": [0.5], "y": [0.5]})
    assert successive_halving(["y", "x"], advance)[0] == "y"
    advance, calls = scripted({"x": [0.5]})
    assert successive_halving(["x"], advance) == ("x", []) and calls == []  # one finalist: nothing to rank
    with pytest.raises(ValueError, match="at least one"):
        successive_halving([], advance)
    with pytest.raises(ValueError, match="duplicate"):
        successive_halving(["x", "x"], advance)


@pytest.mark.parametrize("bad", [float("nan"), None])
@pytest.mark.parametrize("order", ["abc", "bac", "bca", "cab", "cba", "acb"])
def test_a_finalist_without_a_score_is_dropped_first(order, bad):
    # NaN logits give a NaN validation log loss (None once read back from a finished model.pt):
    # NaN compares false both ways, so sorting on it left the diverged finalist anywhere; in
    # order "bac" it survived rung 1 and the best finalist, c, was dropped
    advance, _ = scripted({"a": [bad, bad], "b": [0.50, 0.47], "c": [0.40, 0.45]})
    survivor, dropped = successive_halving(list(order), advance)
    assert survivor == "c"
    assert [(d["key"], d["rung"]) for d in dropped] == [("a", 1), ("b", 2)]


def test_ties_in_a_later_rung_keep_the_better_search_rank():
    # rung 1 puts b ahead of a; at rung 2 they tie, and a ranks better in the search
    advance, _ = scripted({"a": [0.50, 0.40], "b": [0.45, 0.40], "c": [0.60, 0.10]})
    assert successive_halving(["a", "b", "c"], advance) == ("a", [{"key": "c", "rung": 1, "val_logloss": 0.60}, {"key": "b", "rung": 2, "val_logloss": 0.40}])


def test_a_finalist_that_diverges_is_dropped_at_that_rung():
    # advance() returns inf for a finalist whose training diverged: one of the better half by
    # count (3 keys keep 2), it went on to rung 2, trained again, and could survive
    inf = math.inf
    advance, calls = scripted({"a": [inf, inf], "b": [0.50, 0.47], "c": [inf, inf]})
    survivor, dropped = successive_halving(["a", "b", "c"], advance)
    assert survivor == "b" and calls == [("a", 1), ("b", 1), ("c", 1)]
    assert [(d["key"], d["rung"], d["val_logloss"]) for d in dropped] == [("a", 1, inf), ("c", 1, inf)]
    # every key diverged: no survivor
    advance, _ = scripted({"a": [inf], "b": [inf]})
    assert successive_halving(["a", "b"], advance) == (None, [{"key": "a", "rung": 1, "val_logloss": inf}, {"key": "b", "rung": 1, "val_logloss": inf}])


def test_where_every_finalist_left_diverges_the_ones_dropped_before_come_back():
    # a and b beat c in rung 1 and both diverge in rung 2: c, dropped in rung 1, is still a
    # finalist that trains (the survivor used to be a diverged one)
    inf = math.inf
    advance, calls = scripted({"a": [0.45, inf], "b": [0.40, inf], "c": [0.60, 0.55]})
    survivor, dropped = successive_halving(["a", "b", "c"], advance)
    assert survivor == "c" and calls == [("a", 1), ("b", 1), ("c", 1), ("b", 2), ("a", 2)]
    assert [(d["key"], d["rung"]) for d in dropped] == [("a", 2), ("b", 2)]
    # several dropped in that rung come back and go on halving from the next rung
    advance, calls = scripted({"a": [0.45, inf], "b": [0.40, inf], "c": [0.60, None, 0.50], "d": [0.70, None, 0.49]})
    survivor, dropped = successive_halving(["a", "b", "c", "d"], advance)
    assert survivor == "d" and calls[-2:] == [("c", 3), ("d", 3)]
    assert [(d["key"], d["rung"]) for d in dropped] == [("a", 2), ("b", 2), ("c", 3)]


def test_job_with_halving_drops_a_finalist_that_diverges(tmp_path, monkeypatch, capsys):
    """A finalist whose training diverged in a rung ended the whole job (as a finalist trained
    to the end no longer does): it is dropped at that rung with a warning; every finalist
    diverging ends the job."""
    from recnas.errors import TrainingDiverged
    from tests.conftest import diverge_one_finalist

    failed, every = diverge_one_finalist(monkeypatch)
    report = run_job(_halving_cfg(), tmp_path / "run", progress=False)
    out = " ".join(capsys.readouterr().out.split())
    bad = failed[0]
    error = f"{tmp_path / 'run' / 'finalists' / bad}: training diverged: loss nan at step 9; lower lr or set grad_clip"
    assert f"warning: finalist {bad} left out at rung 1: {error}" in out
    fin = {f["key"]: f for f in report["finalists"]}
    assert len(fin) == 3 and fin[bad]["rung"] == 1 and fin[bad]["val_logloss"] == math.inf and fin[bad]["diverged"] == error
    assert not fin[bad]["chosen"] and [f for f in fin.values() if f["chosen"]][0]["key"] != bad
    assert f"{bad} (rung 1, diverged)" in out
    every["one"] = False
    with pytest.raises(TrainingDiverged, match=r"every finalist \(3\) diverged in successive halving; the last: .*training diverged"):
        run_job(_halving_cfg(), tmp_path / "run2", progress=False)


def test_job_with_halving_goes_on_with_a_dropped_finalist_where_the_survivor_diverges_at_the_end(tmp_path, monkeypatch, capsys):
    """The survivor of the halving diverging while it trains on to the end ended the job, the
    finalists dropped on the way left unused: the one dropped at the latest rung goes on to the
    end in its place (the best of that rung first), and is the result; where it diverges too,
    the next; where every one diverges, the job ends."""
    from recnas.errors import TrainingDiverged
    from tests.conftest import diverge_where

    ref = run_job(_halving_cfg(), tmp_path / "ref", progress=False)
    survivor = next(f["key"] for f in ref["finalists"] if f["chosen"])
    rung2 = next(f["key"] for f in ref["finalists"] if f.get("rung") == 2)
    rung1 = next(f["key"] for f in ref["finalists"] if f.get("rung") == 1)
    diverging = {survivor}
    diverge_where(monkeypatch, lambda t, kw: t.out_dir is not None and t.out_dir.name in diverging and kw.get("stop_after") is None)
    report = run_job(_halving_cfg(), tmp_path / "run", progress=False)
    out = " ".join(capsys.readouterr().out.split())
    assert f"warning: finalist {survivor} left out: " in out and f"going on with {rung2} instead (dropped at rung 2, val " in out
    fin = {f["key"]: f for f in report["finalists"]}
    assert len(fin) == 3 and fin[rung2]["chosen"] and fin[survivor]["diverged"] and fin[survivor]["val_logloss"] == math.inf
    assert fin[rung1]["rung"] == 1 and not fin[rung1]["chosen"]
    assert Architecture.load(tmp_path / "run" / "best_arch.json").hash == rung2
    assert (tmp_path / "run" / "best" / "model.pt").exists()
    diverging.add(rung2)
    report = run_job(_halving_cfg(), tmp_path / "run2", progress=False)
    assert [f["key"] for f in report["finalists"] if f["chosen"]] == [rung1]
    diverging.add(rung1)
    with pytest.raises(TrainingDiverged, match=r"every finalist \(3\) diverged in its final training; the last: "):
        run_job(_halving_cfg(), tmp_path / "run3", progress=False)


def _halving_cfg(**kw):
    return load_job_config("smoke", finalists=3, finalist_selection="halving", final={"epochs": 3}, baselines=["lr"], **kw)


def _weights(path):
    return torch.load(path, weights_only=False)["model"]


def test_job_with_halving_trains_the_survivor_exactly_as_a_plain_retrain(tmp_path):
    cfg = _halving_cfg()
    out = tmp_path / "run"
    report = run_job(cfg, out, progress=False)
    fin = report["finalists"]
    chosen = [f for f in fin if f["chosen"]]
    dropped = [f for f in fin if not f["chosen"]]
    assert len(fin) == 3 and len(chosen) == 1 and len(dropped) == 2
    assert [d["rung"] for d in dropped] == [1, 2]  # 3 -> 2 -> 1
    assert {f["key"] for f in fin} == {f["key"] for f in json.loads((out / "results.json").read_text())["finalists"]}
    for d in dropped:  # dropped mid-way: a checkpoint to resume from, no finished model
        assert (out / "finalists" / d["key"] / "checkpoint.pt").exists() and not (out / "finalists" / d["key"] / "model.pt").exists()
    assert Architecture.load(out / "best_arch.json").hash == chosen[0]["key"]
    # the survivor, trained in rungs with pauses, ends with the weights of one uninterrupted run
    space = get_space(cfg.space, **cfg.space_overrides)
    store = CTRStore(tmp_path / "data" / f"synthetic-{cfg.synthetic_rows}-seed{cfg.seed}")
    arch = Architecture.load(out / "best_arch.json")
    fit_or_load(subnet_builder(SimpleNamespace(arch=arch), space, store.meta), cfg.final, store, tmp_path / "plain", progress=False)
    a, b = _weights(out / "best" / "model.pt"), _weights(tmp_path / "plain" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_job_interrupted_during_halving_resumes_to_the_same_result(tmp_path, monkeypatch):
    cfg = _halving_cfg()
    ref = run_job(cfg, tmp_path / "ref", progress=False)
    out = tmp_path / "run"
    import recnas.search.finalists as finalists

    real, calls = finalists.fit_or_load, []

    def dies_in_rung_two(*a, stop_after_evals=None, **k):
        if stop_after_evals == 2:
            calls.append(stop_after_evals)
            if len(calls) == 2:  # the second finalist of rung 2: one already advanced, one not
                raise KeyboardInterrupt
        return real(*a, stop_after_evals=stop_after_evals, **k)

    monkeypatch.setattr(finalists, "fit_or_load", dies_in_rung_two)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, out, progress=False)
    monkeypatch.setattr(finalists, "fit_or_load", real)
    again = run_job(cfg, out, progress=False)
    assert again["finalists"] == ref["finalists"]
    assert [m["test_logloss"] for m in again["models"]] == [m["test_logloss"] for m in ref["models"]]


def test_halving_needs_validation_evaluations():
    with pytest.raises(ConfigError, match="eval_every"):
        load_job_config("smoke", finalists=3, finalist_selection="halving", final={"eval_every": 0})
    with pytest.raises(ConfigError, match="finalist_selection"):
        load_job_config("smoke", finalist_selection="best-guess")


def test_a_rerun_job_replays_the_halving_with_the_same_rung_scores(tmp_path, monkeypatch):
    """Re-running a finished job replays the halving on finalists that are past the rung (or
    finished): each rung must still see the score it saw the first time."""
    import recnas.search.finalists as finalists

    seen = []

    def spy(keys, advance):
        scores = {}

        def recording(key, rung):
            scores[(key, rung)] = advance(key, rung)
            return scores[(key, rung)]

        seen.append(scores)
        return successive_halving(keys, recording)

    monkeypatch.setattr(finalists, "successive_halving", spy)
    cfg = _halving_cfg()
    first = run_job(cfg, tmp_path / "run", progress=False)
    again = run_job(cfg, tmp_path / "run", progress=False)
    assert seen[0] == seen[1] and again["finalists"] == first["finalists"]


def test_rung_score_ignores_evaluations_after_the_rung():
    history = [{"val_logloss": v} for v in (0.52, 0.50, 0.47)]
    assert [rung_score(history, k) for k in (1, 2, 3, 4)] == [0.52, 0.50, 0.47, 0.47]  # 4: stopped after 3
    history = [{"val_logloss": v} for v in (0.52, 0.47, 0.50)]  # the best of the rung, not its last
    assert [rung_score(history, k) for k in (1, 2, 3)] == [0.52, 0.47, 0.47]


def test_rung_score_skips_evaluations_that_are_not_numbers():
    nan = float("nan")
    history = [{"val_logloss": v} for v in (None, None)]  # NaN logits, read back from a finished model.pt
    assert math.isnan(rung_score(history, 2))  # was a TypeError comparing two Nones
    history = [{"val_logloss": v} for v in (nan, 0.50, None, 0.47)]
    assert [rung_score(history, k) for k in (2, 3, 4)] == [0.50, 0.50, 0.47]  # a NaN first used to win `min`
