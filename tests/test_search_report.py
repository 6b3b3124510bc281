"""The search report's figures and tables, on hand-made candidates and models: what each plot
draws and says, and that results.md and results.json agree."""

import json
import math

import numpy as np
import pytest

from recnas.search import report as report_mod
from recnas.search.objective import Objective
from recnas.search.results import ResultsStore


@pytest.fixture
def figures(monkeypatch):
    """The figures the report saves, by file name (the last of each), still open for inspection;
    every one is closed at the end (a name saved twice left its first figure open: pyplot warned
    of more than 20 open figures in the suite)."""
    saved, made = {}, []

    def keep(fig, path):
        saved[path.name] = fig
        made.append(fig)
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(report_mod, "save_figure", keep)
    yield saved
    import matplotlib.pyplot as plt

    for fig in made:
        plt.close(fig)


def _store(tmp_path, candidates, gens):
    store = ResultsStore(tmp_path / "search.sqlite")
    for c in candidates:
        store.put(c["key"], "{}", {k: v for k, v in c.items() if k != "key"})
    for g in gens:
        store.log_generation("search", g["generation"], candidates[0]["key"], g["best_score"], g["mean_score"], 1)
    return store


PENALIZED = Objective(kind="penalized", targets={"flops": 100.0}, beta=0.5)


def _report(models):
    return {"dataset": "synthetic", "bayes": {"test_logloss": 0.40, "test_auc": 0.8}, "search": {"scoring": "supernet"}, "models": models, "finalists": []}


def test_progress_axis_says_the_score_holds_the_cost_penalty(tmp_path, figures):
    """A penalized search's generation scores are log loss + beta * penalty (here 0.9 for a
    log loss of 0.4): the axis called them a validation log loss."""
    cands = [{"key": "a", "logloss": 0.4, "flops": 200.0}, {"key": "b", "logloss": 0.5, "flops": 50.0}]
    scores = [PENALIZED.score(c) for c in cands]
    assert scores == [pytest.approx(0.4 + 0.5 * (200 / 100 - 1)), 0.5]
    store = _store(tmp_path, cands, [{"generation": 0, "best_score": min(scores), "mean_score": sum(scores) / 2}])
    models = [{"model": "recnas (searched)", "test_logloss": 0.45, "flops": 50.0}]
    report_mod.write_report(tmp_path, _report(models), store, "search", PENALIZED)
    label = figures["search_progress.png"].axes[0].get_ylabel()
    assert "penalty" in label and label.startswith("score (validation log loss")
    report_mod.write_report(tmp_path, _report(models), store, "search", Objective())
    assert "penalty" not in figures["search_progress.png"].axes[0].get_ylabel()  # kind loss: the score is the log loss
    store.close()


def _is_star(collection) -> bool:
    from matplotlib.markers import MarkerStyle

    star = MarkerStyle("*")
    star = star.get_path().transformed(star.get_transform()).vertices
    drawn = collection.get_paths()[0].vertices
    return drawn.shape == star.shape and bool(np.allclose(drawn, star))


def _stars(ax):
    """(x, y) of the large markers (the searched model's star) drawn on `ax`; each is a star."""
    large = [c for c in ax.collections if len(c.get_sizes()) and c.get_sizes()[0] >= 120]
    assert all(_is_star(c) for c in large) and not [c for c in ax.collections if c not in large and len(c.get_offsets()) and _is_star(c)]
    return [tuple(c.get_offsets()[0]) for c in large]


def test_score_vs_cost_stars_the_searched_model_and_names_models_of_zero_cost(tmp_path, figures):
    """The right panel starred the first model it drew: with the searched model at 0 FLOPs (no
    place on the log axis) that was a baseline; and a model or candidate of 0 FLOPs (lr without
    numeric features) vanished without a word."""
    cands = [{"key": "a", "logloss": 0.5, "flops": 0.0}, {"key": "b", "logloss": math.nan, "flops": 10.0}, {"key": "c", "logloss": 0.4, "flops": 100.0}]
    models = [{"model": "recnas (searched)", "test_logloss": 0.45, "flops": 0.0}, {"model": "lr", "test_logloss": 0.5, "flops": 0.0}, {"model": "dlrm", "test_logloss": 0.46, "flops": 200.0}]
    report_mod.plot_score_vs_cost(tmp_path / "score_vs_cost.png", cands, models, Objective(), chosen="a", bayes=0.4)
    left, right = figures["score_vs_cost.png"].axes
    assert _stars(right) == []  # dlrm is no searched model
    assert any("recnas (searched), lr" in t.get_text() for t in right.texts)
    assert [t.get_text() for t in left.texts] == ["1 candidate with 0 flops: not on the log axis; 1 diverged (scored inf): not drawn"]  # b diverged: left out without a word
    assert left.get_title() == "search: candidates" and right.get_title() == "trained models"
    assert left.get_xlabel() == right.get_xlabel() == "FLOPs per sample"  # as the tables name the cost ("flops per sample")
    models[0]["flops"] = 50.0
    report_mod.plot_score_vs_cost(tmp_path / "score_vs_cost.png", cands, models, Objective(), chosen="c", bayes=0.4)
    left, right = figures["score_vs_cost.png"].axes
    assert _stars(right) == [(50.0, 0.45)] and _stars(left) == [(100.0, 0.4)]  # the chosen candidate, too
    assert any(t.get_text().endswith(": lr") for t in right.texts)


def test_score_vs_cost_stars_the_chosen_finalist_not_the_first(tmp_path, figures):
    """write_report stars the finalist marked chosen (the lowest validation log loss), which
    need not be the search's first."""
    cands = [{"key": k, "logloss": ll, "flops": f} for k, ll, f in (("a", 0.40, 100.0), ("b", 0.5, 10.0), ("c", 0.45, 50.0))]
    store = _store(tmp_path, cands, [{"generation": 0, "best_score": 0.4, "mean_score": 0.45}])
    models = [{"model": "recnas (searched)", "test_logloss": 0.45, "flops": 50.0}]
    report = {**_report(models), "finalists": [{"key": "a", "chosen": False}, {"key": "c", "chosen": True}]}
    report_mod.write_report(tmp_path, report, store, "search", Objective())
    assert _stars(figures["score_vs_cost.png"].axes[0]) == [(50.0, 0.45)]
    store.close()


def test_a_column_some_rows_lack_is_shown_with_a_dash_for_them():
    """A column is in the table when any model has it (a model without it reads "-"), never
    dropped because one model lacks it."""
    table = report_mod.markdown_table([{"model": "recnas (searched)", "test_logloss": 0.45, "final_choice": "lr=0.01"}, {"model": "lr", "test_logloss": 0.5}])
    assert table.splitlines()[0] == "| model | test log loss | kept at (final_grid) |"
    assert table.splitlines()[2:] == ["| recnas (searched) | 0.4500 | lr=0.01 |", "| lr | 0.5000 | - |"]


def _md_models(md: str) -> dict[str, dict[str, str]]:
    """results.md's results table: {model: {column header: cell}}."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    heads = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {r[0]: dict(zip(heads, r)) for r in rows}


def test_results_md_and_json_agree(tmp_path, figures):
    """Every cell of results.md is its model's value in results.json, as formatted; the gap to
    Bayes is the test log loss less the Bayes test log loss; the candidate count of results.md
    (this search's candidates alone) is in results.json too, which gave only the store's."""
    import re

    cands = [{"key": k, "logloss": 0.5 + i / 100, "flops": 10.0 * (i + 1)} for i, k in enumerate("abcde")]
    store = _store(tmp_path, cands, [{"generation": 0, "best_score": 0.5, "mean_score": 0.52}])
    bayes = 0.4012
    models = [{"model": "recnas (searched)", "test_logloss": 0.45678, "test_auc": 0.71234, "params": 1234.0, "flops": 56789.0, "train_seconds": 1.25},
              {"model": "lr", "test_logloss": 0.5, "test_auc": math.nan, "params": 14.0, "flops": 0.0, "train_seconds": 0.04}]
    for m in models:
        m["gap_to_bayes"] = m["test_logloss"] - bayes
    finalists = [{"key": "a", "search_score": 0.5, "val_logloss": 0.47, "chosen": False}, {"key": "b", "search_score": 0.51, "val_logloss": 0.46, "chosen": True}]
    report = {**_report(models), "bayes": {"test_logloss": bayes, "test_auc": 0.8265}, "search": {"scoring": "supernet", "candidates_in_store": 5}, "finalists": finalists}
    report_mod.write_report(tmp_path, report, store, "search", Objective(), keys={"a", "b", "c"})  # d, e: an earlier search's
    md = (tmp_path / "results.md").read_text()
    js = json.loads((tmp_path / "results.json").read_text())
    table = _md_models(md)
    assert list(table) == [m["model"] for m in js["models"]]
    labels = {key: (label, fmt) for key, label, fmt in report_mod.COLUMNS}
    for m in js["models"]:
        assert m["gap_to_bayes"] == pytest.approx(m["test_logloss"] - js["bayes"]["test_logloss"])
        for key, value in m.items():
            label, fmt = labels[key]
            assert table[m["model"]][label] == ("-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value))
    assert table["recnas (searched)"]["gap to Bayes"] == "+0.0556" and table["lr"]["test AUC"] == "-"
    assert "Bayes-optimal test log loss: 0.4012, AUC 0.8265" in md
    assert int(re.search(r"Search: (\d+) candidates evaluated", md).group(1)) == js["search"]["candidates_this_search"] == 3
    assert js["search"]["candidates_in_store"] == 5
    assert js["finalists"] == finalists  # which finalist was chosen, on which validation log loss
    store.close()


def test_score_vs_cost_names_the_objectives_of_its_front(tmp_path, figures):
    """The candidates' panel draws the front of log loss and its cost axis; under `kind: pareto`
    over (energy, latency, flops) that is not the search's front, and the legend called it "Pareto
    front" alike."""
    cands = [{"key": k, "logloss": ll, "flops": f} for k, ll, f in (("a", 0.4, 100.0), ("b", 0.5, 10.0), ("c", 0.55, 50.0))]
    report_mod.plot_score_vs_cost(tmp_path / "score_vs_cost.png", cands, [], Objective(kind="pareto", pareto_costs=("flops", "params")))
    (line,) = figures["score_vs_cost.png"].axes[0].lines
    assert line.get_label() == "Pareto front of (log loss, flops)"
    assert sorted(map(tuple, line.get_xydata().tolist())) == [(10.0, 0.5), (100.0, 0.4)]  # c is dominated by b


def test_an_undefined_bayes_auc_reads_n_a(tmp_path, figures):
    """A test split of one class has no AUC, the Bayes-optimal model's included: the line under
    the title printed "AUC nan"."""
    cands = [{"key": "a", "logloss": 0.5, "flops": 10.0}]
    store = _store(tmp_path, cands, [{"generation": 0, "best_score": 0.5, "mean_score": 0.5}])
    models = [{"model": "recnas (searched)", "test_logloss": 0.45, "test_auc": math.nan, "flops": 10.0}]
    report = {**_report(models), "bayes": {"test_logloss": 0.4012, "test_auc": math.nan}}
    report_mod.write_report(tmp_path, report, store, "search", Objective())
    md = (tmp_path / "results.md").read_text()
    assert "Bayes-optimal test log loss: 0.4012, AUC n/a (the floor" in md and "nan" not in md
    store.close()


def test_long_axis_labels_fit_the_saved_figure(tmp_path, monkeypatch):
    """The progress plot's y label under a penalized objective with `scoring: scratch` (and the
    co-design plot's under scratch) ran past the top and bottom of the saved PNG: `save_figure`
    now wraps it onto lines the figure holds."""
    from recnas.search import pareto as pareto_mod
    from recnas.search import plots

    saved = []

    def keep(fig, path):
        saved.append(fig)
        return plots.save_figure(fig, path)

    monkeypatch.setattr(report_mod, "save_figure", keep)
    monkeypatch.setattr(pareto_mod, "save_figure", keep)
    scratch = report_mod.SCORED_WITH["scratch"]
    report_mod.plot_progress(tmp_path / "p.png", [{"generation": 0, "best_score": 0.5, "mean_score": 0.6}], scratch, PENALIZED)
    pareto_mod.plot_front([(1.0, 0.5), (2.0, 0.4)], ("PIM energy per sample (pJ)", f"log loss (candidates: val, {scratch}; baselines: test)"), tmp_path / "f.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for fig in saved:  # closed: a canvas of its own to measure it as it was saved
        renderer, (width, height) = FigureCanvasAgg(fig).get_renderer(), fig.bbox.size
        for ax in fig.axes:
            for label in (ax.xaxis.label, ax.yaxis.label):
                box = label.get_window_extent(renderer)
                assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, label.get_text()
    assert "penalty" in saved[0].axes[0].get_ylabel() and scratch in " ".join(saved[0].axes[0].get_ylabel().split())


def test_progress_says_which_generations_an_inf_score_leaves_out(tmp_path, figures):
    """While a diverged candidate (scored inf) is in the population the mean score is inf, and
    matplotlib drew nothing there: the legend's "population mean" had no line for those
    generations, and nothing said why."""
    gens = [{"generation": g, "best_score": 0.6 - g / 100, "mean_score": math.inf if g < 2 else 0.65} for g in range(4)]
    report_mod.plot_progress(tmp_path / "search_progress.png", gens)
    (ax,) = figures["search_progress.png"].axes
    assert [t.get_text() for t in ax.texts] == ["not drawn: population mean inf in 2 of 4 generations (a diverged candidate scores inf)"]
    report_mod.plot_progress(tmp_path / "search_progress.png", [{**r, "mean_score": 0.65} for r in gens])
    assert list(figures["search_progress.png"].axes[0].texts) == []


def test_results_md_names_the_cost_targets_a_penalized_search_ranked_by(tmp_path, figures):
    """results.md said the candidates were scored by validation log loss, and nothing of the
    targets that ranked them and chose the finalists (only results.json's `objective`)."""
    cands = [{"key": "a", "logloss": 0.4, "flops": 200.0}]
    store = _store(tmp_path, cands, [{"generation": 0, "best_score": 0.9, "mean_score": 0.9}])
    models = [{"model": "recnas (searched)", "test_logloss": 0.45, "flops": 200.0}]
    report_mod.write_report(tmp_path, _report(models), store, "search", Objective(kind="penalized", targets={"flops": 1.0e5, "params": 0.5}, beta=0.5))
    md = (tmp_path / "results.md").read_text()
    assert "ranked by log loss + 0.5 * max(0, cost / target - 1) summed over the targets (flops 100,000, params 0.5)" in md
    report_mod.write_report(tmp_path, _report(models), store, "search", Objective())
    assert "ranked by" not in (tmp_path / "results.md").read_text()
    store.close()


def test_a_search_of_one_candidate_is_counted_in_the_singular(tmp_path, figures):
    """A space of one architecture: results.md read "Search: 1 candidates evaluated"."""
    from recnas.train.metrics import counted

    assert (counted(1, "candidate"), counted(0, "candidate"), counted(1200, "process", "processes")) == ("1 candidate", "0 candidates", "1,200 processes")
    store = _store(tmp_path, [{"key": "a", "logloss": 0.5, "flops": 10.0}], [{"generation": 0, "best_score": 0.5, "mean_score": 0.5}])
    models = [{"model": "recnas (searched)", "test_logloss": 0.45, "test_auc": 0.7, "flops": 10.0}]
    report_mod.write_report(tmp_path, _report(models), store, "search", Objective())
    assert "Search: 1 candidate evaluated (" in (tmp_path / "results.md").read_text()
    store.close()


def test_a_model_whose_test_log_loss_is_nan_is_warned_about(tmp_path):
    """Test rows of a huge magnitude gave the searched model NaN logits: the results table showed
    its test log loss and AUC as "-" with no word, as if not measured."""
    import io
    import math

    import numpy as np
    from rich.console import Console

    from recnas.data.store import CTRStore
    from recnas.search.pipeline import _nan_test_notes
    from tests.conftest import make_tiny_store

    store = make_tiny_store(tmp_path / "s")
    dense = np.load(store.dir / "test" / "dense.npy", mmap_mode="r+")
    dense[0] = 3e38
    dense.flush()
    del dense
    rows = [{"model": "recnas (searched)", "test_logloss": math.nan}, {"model": "lr", "test_logloss": 0.6}]
    printed = io.StringIO()
    notes = _nan_test_notes(rows, CTRStore(store.dir), Console(file=printed, width=400))
    assert notes == ["the logits of recnas (searched) are not numbers on some test rows: its test log loss and AUC are shown as -; "
                     "the test split's dense features reach |x| = 3e+38: models diverge or learn nothing at such magnitudes; prepare the data with dense_transform: log1p, or scale those columns"]
    assert printed.getvalue().strip() == f"warning: {notes[0]}"
    assert _nan_test_notes(rows[1:], CTRStore(store.dir), Console(file=io.StringIO())) == []


def test_models_above_the_base_rate_log_loss_are_warned_about(tmp_path):
    """A model whose test log loss is above that of predicting the training click rate for every
    row learnt nothing usable (too high an lr leaves finite, useless weights): the table gave it
    as one more number. Named (exactly those above; NaN is _nan_test_notes' to say), printed and
    returned for results.md; none above, nothing."""
    import io
    import math

    from rich.console import Console

    from recnas.search.pipeline import _above_base_rate_notes
    from recnas.search.study import base_rate_logloss
    from tests.conftest import make_tiny_store

    store = make_tiny_store(tmp_path / "s", seed=2)
    base = base_rate_logloss(store.split("train").label, store.split("test").label)
    # the test split's click rate is not the validation split's here: the rows judged are the test rows
    assert base < base_rate_logloss(store.split("train").label, store.split("val").label) - 0.01
    rows = [{"model": "recnas (searched)", "test_logloss": base + 0.01}, {"model": "lr", "test_logloss": base - 0.01},
            {"model": "dlrm", "test_logloss": 7.5}, {"model": "deepfm", "test_logloss": math.nan}]
    printed = io.StringIO()
    notes = _above_base_rate_notes(rows, store, Console(file=printed, width=400))
    assert notes == [f"the test log loss of recnas (searched), dlrm is above that of predicting the training click rate for every row ({base:.4f}): "
                     "they learnt nothing usable; check the final training's lr and length"]
    assert printed.getvalue().strip() == f"warning: {notes[0]}"
    assert _above_base_rate_notes(rows[1:2], store, Console(file=io.StringIO())) == []
    assert "it learnt nothing usable" in _above_base_rate_notes(rows[2:3], store, Console(file=io.StringIO()))[0]


def test_a_test_split_of_one_class_names_no_model_above_its_base_rate(tmp_path, monkeypatch):
    """A train and test split of one class: the base rate's log loss is 0 (or infinite with
    the other class), so every model (or none) was "above" it; the job's test rows named every
    model of such a split while the other two warnings judged nothing. One rule now
    (`above_base_rate`): a one-class split judges nothing; the data notes name the split."""
    import io
    import math

    from rich.console import Console

    import recnas.search.study as study
    from recnas.search.pipeline import _above_base_rate_notes
    from tests.conftest import make_tiny_store

    store = make_tiny_store(tmp_path / "s", seed=2)
    rows = [{"model": "recnas (searched)", "test_logloss": 0.3}, {"model": "lr", "test_logloss": 7.5}]
    for base in (0.0, math.inf):
        monkeypatch.setattr(study, "store_base_rate", lambda *a, base=base, **k: base)
        assert _above_base_rate_notes(rows, store, Console(file=io.StringIO())) == []
    assert study.above_base_rate(0.3, 0.2) and not study.above_base_rate(0.2, 0.2) and not study.above_base_rate(0.1, 0.2)
    assert not study.above_base_rate(0.3, 0.0) and not study.above_base_rate(0.3, math.inf)
    assert not study.above_base_rate(math.inf, 0.2) and not study.above_base_rate(math.nan, 0.2) and not study.above_base_rate(None, 0.2)


def test_a_job_whose_models_learnt_nothing_says_so_in_results_md(tmp_path):
    """The smoke job at a final lr of 30: its models end far above the base rate (28 and 7.7
    against 0.53); the job warns and results.md says it above the table."""
    from recnas.search.job import load_job_config
    from recnas.search.pipeline import run_job

    run_job(load_job_config("smoke", final={"lr": 30.0}, baselines=["lr"]), tmp_path / "run", progress=False)
    md = (tmp_path / "run" / "results.md").read_text()
    assert "warning: the test log loss of recnas (searched), lr is above that of predicting the training click rate for every row (" in md
