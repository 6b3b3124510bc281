import numpy as np
import pytest

from recnas.errors import ConfigError
from recnas.search.pareto import crowding_distance, dominates, non_dominated_sort, pareto_front, plot_front

# (log loss, energy): a trade-off curve 0-3, dominated points 4-6, a duplicate of 1 (7)
POINTS = np.array([[0.40, 9.0], [0.41, 5.0], [0.43, 3.0], [0.47, 1.0], [0.42, 6.0], [0.45, 4.0], [0.50, 9.5], [0.41, 5.0]])


def test_fronts_on_hand_made_points():
    fronts = non_dominated_sort(POINTS)
    assert fronts == [[0, 1, 2, 3, 7], [4, 5], [6]]
    assert pareto_front(POINTS) == [0, 1, 2, 3, 7]
    assert sorted(i for f in fronts for i in f) == list(range(len(POINTS)))
    for k, front in enumerate(fronts):  # nobody in front k is dominated by a point of front >= k
        later = [j for f in fronts[k:] for j in f]
        assert not any(dominates(POINTS[j], POINTS[i]) for i in front for j in later)
    assert dominates(POINTS[1], POINTS[4]) and not dominates(POINTS[1], POINTS[7])


def test_three_objectives_and_edge_cases():
    p = np.array([[1, 1, 1], [0, 2, 2], [2, 2, 2], [1, 1, 1]])
    assert non_dominated_sort(p) == [[0, 1, 3], [2]]
    assert non_dominated_sort(np.zeros((0, 2))) == [] and pareto_front(np.zeros((0, 2))) == []
    with pytest.raises(ConfigError, match="2-D"):
        non_dominated_sort([1, 2, 3])
    with pytest.raises(ConfigError, match="NaN"):
        pareto_front([[0.1, np.nan]])


def test_crowding_distance_by_hand():
    p = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]])
    d = crowding_distance(p)
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[1] == pytest.approx((3 - 0) / 4 + (4 - 1) / 4)
    assert d[2] == pytest.approx((4 - 1) / 4 + (3 - 0) / 4)
    assert np.isinf(crowding_distance(p[:2])).all()
    flat = crowding_distance(np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]]))
    assert flat[1] == pytest.approx(1.0)  # constant objective adds nothing


def test_plot_front_writes_a_figure(tmp_path):
    out = plot_front(POINTS, ["log loss", "energy (uJ)"], tmp_path / "fig" / "front.png", labels=[f"a{i}" for i in range(len(POINTS))], baselines={"DLRM": (0.44, 7.0)})
    assert out.read_bytes().startswith(b"\x89PNG")
    pdf = plot_front(POINTS, ["log loss", "energy (uJ)"], tmp_path / "fig" / "front.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")  # the format follows the suffix
    assert out.is_file() and out.stat().st_size > 1000
    with pytest.raises(ConfigError, match="two objectives"):
        plot_front(np.ones((3, 3)), ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="labels"):
        plot_front(POINTS, ["a", "b"], tmp_path / "x.png", labels=["one"])


def test_codesign_report_when_every_candidate_diverged(tmp_path):
    """No candidate with a finite log loss: an empty front, not a failed report after the job."""
    import json
    import math

    from recnas.search.objective import Objective
    from recnas.search.report import write_pareto

    cand = [{"key": f"k{i}", "logloss": math.inf, "auc": math.nan, "energy": 10.0 + i, "latency": 1.0, "flops": 5.0, "params": 2.0} for i in range(3)]
    models = [{"model": "recnas (searched)", "test_logloss": 0.5, "energy": 9.0}, {"model": "dlrm", "test_logloss": 0.45, "energy": 20.0}]
    lines = write_pareto(tmp_path, cand, models, Objective(kind="pareto"))
    assert json.loads((tmp_path / "pareto.json").read_text()) == []
    assert (tmp_path / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert any("0 non-dominated candidates of 0" in line for line in lines)


def test_codesign_report_names_the_objectives_of_its_front(tmp_path):
    """The front is over log loss and `pareto_costs`; the report said (log loss, energy, latency,
    FLOPs) whatever they were."""
    from recnas.search.objective import Objective
    from recnas.search.report import write_pareto

    # b is dominated in (log loss, energy) only: cheaper latency and FLOPs would keep it
    cand = [{"key": "a", "logloss": 0.40, "auc": 0.7, "energy": 5.0, "latency": 9.0, "flops": 9.0, "params": 1.0},
            {"key": "b", "logloss": 0.41, "auc": 0.7, "energy": 6.0, "latency": 1.0, "flops": 1.0, "params": 1.0}]
    models = [{"model": "recnas (searched)", "test_logloss": 0.5, "energy": 9.0}]
    lines = write_pareto(tmp_path, cand, models, Objective(kind="pareto", pareto_costs=("energy",)))
    assert any("1 non-dominated candidates of 2 over (log loss, energy):" in line for line in lines)
    lines = write_pareto(tmp_path, cand, models, Objective(kind="pareto"))
    assert any("2 non-dominated candidates of 2 over (log loss, energy, latency, flops):" in line for line in lines)


def test_the_results_table_shows_whether_a_pim_design_fits_the_chip():
    """The co-design search does not enforce `crossbar_budget`; the results table said nothing
    of a winner that needs more crossbars than the chip has (only results.json had `fits`)."""
    from recnas.search.report import markdown_table

    pim = markdown_table([{"model": "recnas (searched)", "test_logloss": 0.45, "energy": 1e5, "crossbars": 20000.0, "fits": False},
                          {"model": "dlrm", "test_logloss": 0.46, "energy": 2e5, "crossbars": 6.0, "fits": True}])
    header, _, searched, dlrm = pim.splitlines()
    assert "PIM crossbars" in header and "fits the chip (crossbar_budget)" in header
    assert searched.endswith("| 20,000 | False |") and dlrm.endswith("| 6 | True |")
    assert "crossbars" not in markdown_table([{"model": "dlrm", "test_logloss": 0.46}])  # no PIM: no such columns


def test_the_codesign_plot_marks_the_front_the_report_lists(tmp_path, monkeypatch):
    """pareto.md lists the front over (log loss, energy, latency, flops); pareto.png marked the
    front of (energy, log loss) alone under the same name: fewer candidates than the report said."""
    import json

    from recnas.search import pareto as pareto_mod
    from recnas.search.objective import Objective
    from recnas.search.report import write_pareto

    figs = []
    monkeypatch.setattr(pareto_mod, "save_figure", lambda fig, path: figs.append(fig) or path)
    # b is dominated in (log loss, energy) by a, but has the lower latency and FLOPs; c is dominated by a in all
    cand = [{"key": "a", "logloss": 0.40, "auc": 0.7, "energy": 5.0, "latency": 9.0, "flops": 9.0, "params": 1.0},
            {"key": "b", "logloss": 0.41, "auc": 0.7, "energy": 6.0, "latency": 1.0, "flops": 1.0, "params": 1.0},
            {"key": "c", "logloss": 0.42, "auc": 0.7, "energy": 7.0, "latency": 9.5, "flops": 9.5, "params": 1.0}]
    models = [{"model": "recnas (searched)", "test_logloss": 0.5, "energy": 9.0}, {"model": "dlrm", "test_logloss": 0.45, "energy": 20.0}]

    def marked(objective):
        write_pareto(tmp_path, cand, models, objective)
        ax = figs[-1].axes[0]
        (front,) = [c for c in ax.collections if c.get_label().startswith("Pareto front")]
        return sorted(map(tuple, front.get_offsets().tolist())), front.get_label(), len(ax.lines)

    points, label, lines = marked(Objective(kind="pareto"))
    assert [r["key"] for r in json.loads((tmp_path / "pareto.json").read_text())] == ["a", "b"]
    assert points == [(5.0, 0.40), (6.0, 0.41)] and label == "Pareto front over (log loss, energy, latency, flops)"
    assert lines == 0  # no step line through a front of four objectives
    points, label, lines = marked(Objective(kind="pareto", pareto_costs=("energy",)))
    assert points == [(5.0, 0.40)] and lines == 1  # over the two plotted objectives: the step line too
    import matplotlib.pyplot as plt

    for fig in figs:
        plt.close(fig)


def _brute_front(p):
    """The non-dominated set by definition: no other point is <= in all and < in one."""
    return [i for i in range(len(p)) if not any(dominates(p[j], p[i]) for j in range(len(p)) if j != i)]


@pytest.mark.parametrize("points", [
    [[0.5, 3.0]],  # one candidate
    [[0.5, 3.0], [0.5, 3.0], [0.5, 3.0]],  # all equal: all non-dominated
    [[0.5, 0.0], [0.4, 0.0], [0.4, 0.0], [0.6, 0.0]],  # costs of 0, a duplicate pair in front
    [[0.4, 2.0], [0.4, 1.0], [0.3, 2.0], [0.3, 1.0]],  # ties in one objective: one point beats all
    [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
])
def test_the_front_is_exactly_the_non_dominated_set(points):
    p = np.asarray(points, dtype=float)
    assert pareto_front(p) == _brute_front(p)
    fronts = non_dominated_sort(p)
    assert sorted(i for f in fronts for i in f) == list(range(len(p)))
    left = list(range(len(p)))
    for front in fronts:  # front k is the non-dominated set once fronts < k are removed
        assert sorted(front) == [left[i] for i in _brute_front(p[left])]
        left = [i for i in left if i not in front]


def test_a_front_of_random_points_matches_the_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.integers(0, 4, size=(12, 3)).astype(float)  # small integers: many ties and duplicates
        assert pareto_front(p) == _brute_front(p)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_objective_is_refused_not_ranked(bad):
    """The search and the report leave such candidates out before ranking (a diverged one scores
    inf); handed one, the ranking refuses rather than place it in a front."""
    with pytest.raises(ConfigError, match="NaN or infinite"):
        non_dominated_sort([[0.4, 1.0], [bad, 2.0]])
    with pytest.raises(ConfigError, match="NaN or infinite"):
        crowding_distance([[0.4, bad]])


def test_a_pareto_search_without_pim_reports_its_front(tmp_path, monkeypatch):
    """`kind: pareto` over (flops, params), no PIM: the report wrote no pareto.md, .json or
    plot (only co-design candidates, with energy, had one), while docs/search.md and `search
    show` pointed at pareto.md."""
    import json

    from recnas.search import pareto as pareto_mod
    from recnas.search import report as report_mod
    from recnas.search.objective import Objective
    from recnas.search.results import ResultsStore

    figs = []
    monkeypatch.setattr(pareto_mod, "save_figure", lambda fig, path: figs.append(fig) or path)
    monkeypatch.setattr(report_mod, "save_figure", lambda fig, path: path)
    store = ResultsStore(tmp_path / "search.sqlite")
    # b trades log loss for FLOPs, c for params; d is dominated by a
    for key, loss, flops, params in (("a", 0.40, 90.0, 9.0), ("b", 0.45, 10.0, 9.0), ("c", 0.46, 95.0, 1.0), ("d", 0.41, 99.0, 9.5)):
        store.put(key, "{}", {"logloss": loss, "auc": 0.7, "flops": flops, "params": params})
    models = [{"model": "recnas (searched)", "test_logloss": 0.5, "flops": 90.0, "params": 9.0}, {"model": "dlrm", "test_logloss": 0.45, "flops": 200.0, "params": 30.0}]
    objective = Objective(kind="pareto", pareto_costs=("flops", "params"))
    report_mod.write_report(tmp_path, {"dataset": "tiny", "models": models, "search": {}}, store, "search", objective)
    store.close()
    assert [r["key"] for r in json.loads((tmp_path / "pareto.json").read_text())] == ["b", "a", "c"]  # by FLOPs
    md = (tmp_path / "pareto.md").read_text()
    assert "| candidate | val log loss | FLOPs | dense params |" in md and "| b | 0.4500 | 10 | 9 |" in md
    assert "3 non-dominated candidates of 4 over (log loss, flops, params)" in (tmp_path / "results.md").read_text()
    ax = figs[-1].axes[0]
    assert ax.get_xlabel() == "FLOPs per sample" and any(t.get_text() == "dlrm" for t in ax.texts)
    # the run continued with a log-loss objective (the objective may change): no front is left
    # beside a report that no longer names one
    (tmp_path / "pareto.png").write_bytes(b"png")
    store = ResultsStore(tmp_path / "search.sqlite")
    report_mod.write_report(tmp_path, {"dataset": "tiny", "models": models, "search": {}}, store, "search", Objective())
    store.close()
    assert "pareto" not in (tmp_path / "results.md").read_text()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("pareto")]


def test_a_codesign_search_ranked_by_penalty_reports_its_front_with_each_design_s_hardware(tmp_path, monkeypatch):
    """Co-design candidates (they have PIM energy) get a front whatever the objective ranked
    them by, and each row of pareto.json names the PIM design it was costed on."""
    import json

    from recnas.search import pareto as pareto_mod
    from recnas.search import report as report_mod
    from recnas.search.objective import Objective
    from recnas.search.results import ResultsStore

    monkeypatch.setattr(pareto_mod, "save_figure", lambda fig, path: path)
    monkeypatch.setattr(report_mod, "save_figure", lambda fig, path: path)
    store = ResultsStore(tmp_path / "search.sqlite")
    for key, loss, energy, bits in (("a", 0.40, 9.0, 8), ("b", 0.45, 1.0, 4), ("c", 0.46, 9.5, 2)):
        store.put(key, "{}", {"logloss": loss, "auc": 0.7, "energy": energy, "latency": energy, "flops": 5.0, "params": 1.0, "hardware": {"weight_bits": bits}})
    models = [{"model": "recnas (searched)", "test_logloss": 0.5, "energy": 9.0}]
    report_mod.write_report(tmp_path, {"dataset": "tiny", "models": models, "search": {}}, store, "search", Objective(kind="penalized", targets={"energy": 5.0}))
    store.close()
    assert [(r["key"], r["hardware"]) for r in json.loads((tmp_path / "pareto.json").read_text())] == [("b", {"weight_bits": 4}), ("a", {"weight_bits": 8})]
    assert "2 non-dominated candidates of 3" in (tmp_path / "results.md").read_text()


def test_pareto_json_holds_each_design_as_an_object_not_json_text(tmp_path, monkeypatch):
    """A search stores each candidate's PIM design as JSON text (its `hardware` column), and
    pareto.json wrote that text as a string: `"hardware": "{\\"act_bits\\": 4, ...}"`."""
    import json

    from recnas.search import pareto as pareto_mod
    from recnas.search import report as report_mod
    from recnas.search.objective import Objective
    from recnas.search.results import ResultsStore

    monkeypatch.setattr(pareto_mod, "save_figure", lambda fig, path: path)
    monkeypatch.setattr(report_mod, "save_figure", lambda fig, path: path)
    store = ResultsStore(tmp_path / "search.sqlite")
    for key, loss, energy, bits in (("a", 0.40, 9.0, 8), ("b", 0.45, 1.0, 4)):
        store.put(key, "{}", {"logloss": loss, "auc": 0.7, "energy": energy, "latency": energy, "flops": 5.0, "params": 1.0}, json.dumps({"weight_bits": bits}))
    models = [{"model": "recnas (searched)", "test_logloss": 0.5, "energy": 9.0}]
    report_mod.write_report(tmp_path, {"dataset": "tiny", "models": models, "search": {}}, store, "search", Objective(kind="pareto"))
    store.close()
    assert [(r["key"], r["hardware"]) for r in json.loads((tmp_path / "pareto.json").read_text())] == [("b", {"weight_bits": 4}), ("a", {"weight_bits": 8})]


def test_the_codesign_plot_draws_baselines_at_their_quality_on_pim(tmp_path, monkeypatch):
    """Each baseline's star stood at its PIM energy and its full-precision test log loss, while
    the candidates beside it are scored quantised and results.md pairs those costs with the
    "test log loss on its PIM config"."""
    from recnas.search import pareto as pareto_mod
    from recnas.search.objective import Objective
    from recnas.search.report import write_pareto

    figs = []
    monkeypatch.setattr(pareto_mod, "save_figure", lambda fig, path: figs.append(fig) or path)
    cand = [{"key": "a", "logloss": 0.40, "auc": 0.7, "energy": 5.0, "latency": 9.0, "flops": 9.0, "params": 1.0}]
    models = [{"model": "recnas (searched)", "test_logloss": 0.5, "test_logloss_pim": 0.51, "energy": 5.0},
              {"model": "lr", "test_logloss": 0.6701, "test_logloss_pim": 0.6691, "energy": 20.0}]
    write_pareto(tmp_path, cand, models, Objective(kind="pareto"))
    ax = figs[-1].axes[0]
    stars = [tuple(c.get_offsets()[0]) for c in ax.collections if c.get_label() != "baselines" and len(c.get_offsets()) and tuple(c.get_offsets()[0])[0] == 20.0]
    assert stars == [(20.0, 0.6691)] and ax.get_ylabel().endswith("baselines: test, on the default PIM config)")
    assert [t.get_text() for t in ax.texts] == ["lr"]  # the searched model is a candidate of the front, not a baseline beside it


def test_crowding_distance_gives_every_extreme_of_every_objective_infinity():
    """Each objective's lowest and highest point is a boundary: on one objective, and on three
    where a point is the highest of one objective and the lowest of none."""
    one = crowding_distance(np.array([[0.0], [1.0], [3.0], [4.0]]))
    assert np.isinf(one[0]) and np.isinf(one[3])
    assert one[1] == pytest.approx(3 / 4) and one[2] == pytest.approx(3 / 4)
    three = crowding_distance(np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [2.0, 2.0, 0.0], [1.0, 1.0, 2.0], [0.5, 0.5, 0.5]]))
    assert np.isinf(three[:4]).all() and np.isfinite(three[4])  # point 3 is only the highest of the third
    assert crowding_distance(np.zeros((0, 2))).shape == (0,)  # an empty front: nothing to rank
