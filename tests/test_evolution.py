import math

import pytest

from recnas.errors import ConfigError
from recnas.search.evaluator import Genotype
from recnas.search.evolution import EvolutionConfig, RegularizedEvolution
from recnas.search.objective import Objective
from recnas.search.rank import rank_correlation
from recnas.search.results import ResultsStore
from recnas.space import get_space


def fake_metrics(g: Genotype) -> dict:
    """A deterministic landscape: wider dense dims and 'dot' are better, cost grows with width."""
    a = g.arch
    width = sum(b.dense_dim for b in a.blocks)
    dots = sum("dot" in b.sparse_ops for b in a.blocks)
    return {"logloss": 0.5 - 0.0005 * width - 0.01 * dots, "auc": 0.7, "flops": float(width * 100), "params": float(width)}


class Counting:
    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, g):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return fake_metrics(g)


CFG = EvolutionConfig(population=12, sample_size=4, children=3, generations=8, seed=3)


def test_evolution_improves_on_the_initial_population(tmp_path):
    space = get_space("full-tiny")
    res = ResultsStore(tmp_path / "r.sqlite")
    evo = RegularizedEvolution(space, Counting(), res, CFG)
    out = evo.run()
    gens = res.generations("search")
    assert [g["generation"] for g in gens] == list(range(9))
    assert gens[-1]["best_score"] <= gens[0]["best_score"]
    assert gens[-1]["mean_score"] < gens[0]["mean_score"]  # selection pressure moves the population
    assert out.best_metrics["logloss"] == min(h["logloss"] for h in out.history)
    assert len(out.history) == 12 + 8 * 3


def test_interrupted_search_resumes_without_re_evaluating(tmp_path):
    space = get_space("full-tiny")
    full = RegularizedEvolution(space, Counting(), ResultsStore(tmp_path / "full.sqlite"), CFG).run()

    db = tmp_path / "r.sqlite"
    first = Counting(fail_after=17)
    with pytest.raises(KeyboardInterrupt):
        RegularizedEvolution(space, first, ResultsStore(db), CFG).run()
    assert len(ResultsStore(db)) == 17  # everything scored before the interruption was kept
    second = Counting()
    resumed = RegularizedEvolution(space, second, ResultsStore(db), CFG).run()
    assert second.calls == full.evaluated - 17  # nothing scored twice
    assert resumed.best.key == full.best.key
    assert [h["key"] for h in resumed.history] == [h["key"] for h in full.history]


def test_a_search_continued_with_fewer_generations_logs_only_its_own(tmp_path):
    """The generations of an earlier, longer search on the same store used to stay in the log
    (and the progress plot) after the shorter one's."""
    space, db = get_space("full-tiny"), tmp_path / "r.sqlite"
    RegularizedEvolution(space, Counting(), ResultsStore(db), CFG).run()
    res = ResultsStore(db)
    short = CFG.model_copy(update={"generations": 2})
    RegularizedEvolution(space, Counting(), res, short).run()
    fresh = ResultsStore(tmp_path / "fresh.sqlite")
    RegularizedEvolution(space, Counting(), fresh, short).run()
    drop = lambda gens: [{k: v for k, v in g.items() if k != "evaluated"} for g in gens]  # noqa: E731 (cached here, evaluated there)
    assert [g["generation"] for g in res.generations("search")] == [0, 1, 2]
    assert drop(res.generations("search")) == drop(fresh.generations("search"))


def test_penalized_objective_prefers_cheaper_models_over_target(tmp_path):
    obj = Objective(kind="penalized", targets={"flops": 1000.0}, beta=1.0)
    assert obj.score({"logloss": 0.4, "flops": 900.0}) == pytest.approx(0.4)  # under target: no penalty
    assert obj.score({"logloss": 0.4, "flops": 2000.0}) == pytest.approx(1.4)
    space = get_space("full-tiny")
    plain = RegularizedEvolution(space, Counting(), ResultsStore(tmp_path / "a.sqlite"), CFG).run()
    cheap = RegularizedEvolution(space, Counting(), ResultsStore(tmp_path / "b.sqlite"), CFG, Objective(kind="penalized", targets={"flops": 3000.0}, beta=1.0)).run()
    assert cheap.best_metrics["flops"] < plain.best_metrics["flops"]


@pytest.mark.parametrize("objective", [Objective(kind="pareto"), Objective(kind="penalized", targets={"latency": 50.0})], ids=["pareto", "penalized"])
def test_an_objective_over_a_cost_the_candidates_lack_is_refused(tmp_path, objective):
    """Without co-design no candidate has energy or latency: the Python API's evolution ranked a
    Pareto front over them as 0 (free) and skipped a target on them, silently (the job refuses
    such a config when it loads)."""
    evo = RegularizedEvolution(get_space("full-tiny"), Counting(), ResultsStore(tmp_path / "r.sqlite"), CFG, objective)
    with pytest.raises(ConfigError, match=r"ranks by (energy|latency), which the candidate's metrics do not hold \(.*hardware pim\)"):
        evo.run()


def test_bad_evolution_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="sample_size"):
        RegularizedEvolution(get_space("full-tiny"), Counting(), ResultsStore(tmp_path / "r.sqlite"), EvolutionConfig(population=4, sample_size=8))


def test_corrupt_results_database_is_a_clear_error(tmp_path):
    from recnas.errors import DataError

    bad = tmp_path / "r.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="not a readable recnas results database"):
        ResultsStore(bad)


def test_rank_correlation_on_hand_made_rankings():
    same = rank_correlation([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert same["kendall_tau"] == pytest.approx(1.0) and same["spearman"] == pytest.approx(1.0)
    rev = rank_correlation([1, 2, 3, 4], [4, 3, 2, 1])
    assert rev["kendall_tau"] == pytest.approx(-1.0)
    # one swapped pair out of 6: tau = (5 - 1) / 6
    assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4])["kendall_tau"] == pytest.approx(4 / 6)
    r = rank_correlation([1, 2, float("nan"), 4], [1, 2, 3, 4])
    assert r["n"] == 3 and r["kendall_tau"] == pytest.approx(1.0)
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3])["kendall_tau"])


def test_rank_correlation_with_ties_is_tau_b_and_spearman_of_average_ranks():
    """Supernet scores tie often (candidates bunched within 0.01): tau is Kendall's tau-b, which
    corrects for ties on either side (tau-a would give (22 - 1) / 28 = 0.75, tau-c 0.820),
    and rho is Pearson's r of the tied values' average ranks."""
    a, b = [1, 2, 2, 3, 4, 4, 4, 5], [2, 1, 3, 3, 5, 4, 4, 6]
    # by hand: 28 pairs, 22 concordant, 1 discordant; 4 tied in a, 2 in b (one pair in both)
    r = rank_correlation(a, b)
    assert r["kendall_tau"] == pytest.approx((22 - 1) / math.sqrt((28 - 4) * (28 - 2)))
    ra, rb = [1, 2.5, 2.5, 4, 6, 6, 6, 8], [2, 1, 3.5, 3.5, 7, 5.5, 5.5, 8]
    ma, mb = sum(ra) / 8, sum(rb) / 8
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    assert r["spearman"] == pytest.approx(cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)))


def test_rank_correlation_spearman_ties_pairs_and_lengths_by_hand():
    """Spearman 1 - 6 sum d^2 / (n (n^2 - 1)); Kendall's tau-b (ties corrected); a pair is
    dropped when either score is not finite; two pairs are enough; a constant list has no
    correlation (NaN, without scipy's warning); lists of other lengths are refused."""
    import warnings

    r = rank_correlation([1, 2, 3, 4], [1, 3, 2, 4])
    assert r["spearman"] == pytest.approx(1 - 6 * 2 / (4 * 15))  # d = 0, 1, 1, 0
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1])["spearman"] == pytest.approx(-1.0)
    # x ties one pair of 6; the 5 others concordant: tau-b = 5 / sqrt((6 - 1) * 6)
    assert rank_correlation([1, 2, 2, 3], [1, 2, 3, 4])["kendall_tau"] == pytest.approx(5 / math.sqrt(30))
    r = rank_correlation([1, 2, 3, 4, 5], [1, 2, math.nan, 3, math.inf])  # the second list's non-finite too
    assert r["n"] == 3 and r["kendall_tau"] == pytest.approx(1.0) and r["spearman"] == pytest.approx(1.0)
    assert rank_correlation([1, 2], [5, 3]) == {"kendall_tau": pytest.approx(-1.0), "spearman": pytest.approx(-1.0), "n": 2}
    assert math.isnan(rank_correlation([1], [1])["kendall_tau"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        const = rank_correlation([1, 2, 3], [7, 7, 7])
    assert math.isnan(const["kendall_tau"]) and math.isnan(const["spearman"]) and const["n"] == 3
    with pytest.raises(ValueError, match="differ in length: 3 vs 1"):
        rank_correlation([1, 2, 3], [1])


def test_nan_last_sorts_numbers_then_what_is_not_one():
    """inf is a score (a diverged candidate's), so it sorts before NaN and None; a bool is not a
    score."""
    from recnas.search.ranking import is_score, nan_last

    assert sorted([math.nan, math.inf, None, 0.5, -1, 0.25], key=nan_last)[:4] == [-1, 0.25, 0.5, math.inf]
    assert [is_score(v) for v in (0.5, 3, math.inf, math.nan, None, True, False, "0.5")] == [True, True, True, False, False, False, False, False]


@pytest.mark.parametrize("bad", [math.inf, math.nan])
@pytest.mark.parametrize("kind", ["loss", "pareto"])
def test_search_goes_on_past_candidates_with_a_non_finite_log_loss(tmp_path, kind, bad):
    """A diverged candidate scores inf (NaN logits give a NaN log loss): the Pareto selection
    used to end the search on it ("points contain NaN or infinite objective values"), and a NaN
    score failed the generation log with a SQLite traceback and could win `min`."""

    def some_diverge(g):
        m = fake_metrics(g)
        if sum(b.dense_dim for b in g.arch.blocks) % 3 == 0:
            m["logloss"] = bad
        return {**m, "energy": m["flops"], "latency": m["params"]}

    res = ResultsStore(tmp_path / "r.sqlite")
    out = RegularizedEvolution(get_space("full-tiny"), some_diverge, res, CFG, Objective(kind=kind)).run()
    assert any(not math.isfinite(h["logloss"]) for h in out.history)  # the case is exercised
    assert math.isfinite(out.best_metrics["logloss"])
    assert Objective().score({"logloss": math.nan}) == math.inf
    assert all(math.isfinite(g["best_score"]) for g in res.generations("search"))


@pytest.mark.parametrize("flops, params, expected", [
    (500.0, 5.0, 0.4),  # both below target: no penalty, no reward for being smaller
    (1000.0, 10.0, 0.4),  # exactly at target
    (1500.0, 10.0, 0.4 + 0.25 * 0.5),  # flops 50% over
    (1500.0, 30.0, 0.4 + 0.25 * 0.5 + 0.25 * 2.0),  # both over: the penalties add
    (500.0, 30.0, 0.4 + 0.25 * 2.0),  # one under does not offset the other
])
def test_penalized_score_is_the_hinge_formula_by_hand(flops, params, expected):
    """score = logloss + sum_c beta * max(0, cost_c / target_c - 1), cost by cost."""
    obj = Objective(kind="penalized", targets={"flops": 1000.0, "params": 10.0}, beta=0.25)
    assert obj.score({"logloss": 0.4, "flops": flops, "params": params}) == pytest.approx(expected)
    assert Objective(kind="penalized", targets={"flops": 1000.0, "params": 10.0}, beta=0.0).score({"logloss": 0.4, "flops": flops, "params": params}) == 0.4
    assert Objective().score({"logloss": 0.4, "flops": flops, "params": params}) == 0.4  # kind loss: costs unread
    assert Objective(kind="pareto", pareto_costs=("flops",)).score({"logloss": 0.4, "flops": flops}) == 0.4
    nan = obj.score({"logloss": math.nan, "flops": flops, "params": params})
    assert nan == math.inf  # NaN logits score as a diverged candidate


def test_reference_targets_are_the_baseline_costs_over_the_ratios(tiny_store):
    """ratios {flops: 2, params: 4} against dlrm: its FLOPs / 2 and dense params / 4, its own row's
    numbers in the results table; an explicit target overrides its cost alone."""
    from recnas.baselines import build_baseline
    from recnas.search.evaluator import model_costs
    from recnas.search.objective import resolve_targets

    meta = tiny_store.meta
    row = model_costs(build_baseline("dlrm", meta), meta)
    obj = resolve_targets(Objective(kind="penalized", reference="dlrm", ratios={"flops": 2.0, "params": 4.0}, targets={"params": 7.0}), meta)
    assert obj.targets == {"flops": pytest.approx(row["flops"] / 2), "params": 7.0}
    m = {"logloss": 0.5, "flops": row["flops"], "params": 3.5}  # dlrm's FLOPs: twice the target
    assert obj.score(m) == pytest.approx(0.5 + obj.beta * 1.0)


class Spy(RegularizedEvolution):
    """Records every tournament (sample and winner), every mutation and the population of
    every generation, as the evolution sees them."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.tournaments, self.mutations, self.populations = [], [], []

    def _select(self, members):
        winner = super()._select(members)
        self.tournaments.append((members, winner))
        return winner

    def mutate(self, g):
        child = super().mutate(g)
        self.mutations.append((g, child))
        return child

    def _log(self, gen, population):
        self.populations.append([g.key for g, _ in population])
        super()._log(gen, population)


@pytest.mark.parametrize("kind", ["loss", "pareto"])
def test_aging_kills_the_oldest_and_the_tournament_winner_is_the_parent(tmp_path, kind):
    """Regularized evolution's contract: each generation's C children join the population and
    its C oldest members leave (not its worst); each child mutates the best of a uniform sample
    of S distinct members of the population before the generation; a NaN log loss (scored inf)
    never wins a tournament that holds a finite member."""

    def some_nan(g):
        m = fake_metrics(g)
        if sum(b.dense_dim for b in g.arch.blocks) % 3 == 0:
            m["logloss"] = math.nan
        return {**m, "energy": m["flops"], "latency": m["params"]}

    cfg = EvolutionConfig(population=10, sample_size=4, children=3, generations=12, seed=7)
    evo = Spy(get_space("full-tiny"), some_nan, ResultsStore(tmp_path / "r.sqlite"), cfg, Objective(kind=kind))
    out = evo.run()
    keys = [h["key"] for h in out.history]
    assert any(math.isnan(h["logloss"]) for h in out.history)  # the case is exercised
    assert evo.populations[0] == keys[:10]
    for gen in range(1, 13):
        children = keys[10 + 3 * (gen - 1) : 10 + 3 * gen]
        assert evo.populations[gen] == (evo.populations[gen - 1] + children)[3:], gen
        assert [c.key for _, c in evo.mutations[3 * (gen - 1) : 3 * gen]] == children
        for members, _ in evo.tournaments[3 * (gen - 1) : 3 * gen]:
            drawn = [g.key for g, _ in members]
            assert len(drawn) == 4 and set(drawn) <= set(evo.populations[gen - 1])
            assert len({id(m) for m in members}) == 4  # drawn without replacement: 4 distinct members
    assert len(evo.tournaments) == len(evo.mutations) == 36
    for (members, winner), (parent, _) in zip(evo.tournaments, evo.mutations):
        assert parent is winner
        score = next(m for g, m in members if g is winner)["score"]
        if any(math.isfinite(m["score"]) for _, m in members):
            assert math.isfinite(score)
        if kind == "loss":
            assert score == min(m["score"] for _, m in members)


def test_nasrec_style_gives_a_generation_one_parent_more_mutations_early_and_no_repeated_child(tmp_path):
    """NASRec's searcher.py: one tournament a generation, whose winner every child of it
    mutates from; a child takes (G - g) // max(20, G // 5) + 1 mutations in generation g (from
    0) of G = 40: 3 in the first, 2 up to g = 20, then 1; one that repeats an earlier child is
    mutated on (from itself) until it is new."""
    cfg = EvolutionConfig(population=12, sample_size=4, children=2, generations=40, seed=5, style="nasrec")
    evo = Spy(get_space("full-tiny"), Counting(), ResultsStore(tmp_path / "r.sqlite"), cfg)
    marks = []
    out = evo.run(progress=lambda gen, total: marks.append((len(evo.tournaments), len(evo.mutations))))
    keys = [h["key"] for h in out.history]
    redrawn = 0
    for gen in range(1, 41):
        (t0, m0), (t1, m1) = marks[gen - 1], marks[gen]
        assert t1 - t0 == 1, gen  # one tournament
        parent = evo.tournaments[t1 - 1][1]
        calls = evo.mutations[m0:m1]
        starts = [i for i, (g, _) in enumerate(calls) if g is parent]
        assert starts[0] == 0 and len(starts) == 2, gen  # both children from the one parent
        rounds = 3 if gen == 1 else 2 if gen <= 21 else 1
        for a, b in zip(starts, starts[1:] + [len(calls)]):
            chain = calls[a:b]
            assert len(chain) % rounds == 0, gen
            assert all(prev_out is nxt_in for (_, prev_out), (nxt_in, _) in zip(chain, chain[1:]))  # each on the last
            redrawn += len(chain) // rounds - 1
        assert [c.key for _, c in (calls[b - 1] for b in starts[1:] + [len(calls)])] == keys[12 + 2 * (gen - 1) : 12 + 2 * gen]
    children = keys[12:]
    assert len(children) == 80 and len(set(children)) == 80  # no child repeats an earlier one
    assert redrawn > 0  # the repeat case is exercised


def test_nasrec_style_in_a_space_too_small_for_new_children_gives_repeats(tmp_path):
    """A space with fewer architectures than the search makes children: the search ends (the
    repeats take their stored scores) instead of mutating forever."""
    space = get_space("full-tiny").model_copy(update={"n_blocks": 1, "dense_ops": ("fc",), "sparse_ops": ("dot",), "sparse_dims": (4,)})
    cfg = EvolutionConfig(population=4, sample_size=2, children=3, generations=4, seed=0, style="nasrec")
    counting = Counting()
    out = RegularizedEvolution(space, counting, ResultsStore(tmp_path / "r.sqlite"), cfg).run()
    assert len(out.history) == 4 + 12
    assert counting.calls == len({h["key"] for h in out.history}) <= 3  # three dense widths: three architectures


@pytest.mark.parametrize("style", ["real", "nasrec"])
@pytest.mark.parametrize("codesign", [False, True])
@pytest.mark.parametrize("fail_after", [1, 10, 11, 15])
def test_a_search_resumed_anywhere_replays_the_uninterrupted_one(tmp_path, codesign, fail_after, style):
    """Interrupted in the initial population (1), at its last member (10), in the first
    generation (11) or later: the resumed search visits the same candidates with the same scores,
    evaluates each exactly once in all, and logs the same generations; another seed searches
    elsewhere."""
    space, cfg = get_space("full-tiny"), EvolutionConfig(population=10, sample_size=3, children=2, generations=5, seed=11, style=style)
    full_db = ResultsStore(tmp_path / "full.sqlite")
    full = RegularizedEvolution(space, Counting(), full_db, cfg, codesign=codesign).run()
    db = tmp_path / "r.sqlite"
    with pytest.raises(KeyboardInterrupt):
        RegularizedEvolution(space, Counting(fail_after=fail_after), ResultsStore(db), cfg, codesign=codesign).run()
    second = Counting()
    resumed = RegularizedEvolution(space, second, ResultsStore(db), cfg, codesign=codesign).run()
    assert [(h["key"], h["score"]) for h in resumed.history] == [(h["key"], h["score"]) for h in full.history]
    assert second.calls + fail_after == full.evaluated
    drop = lambda gens: [{k: v for k, v in g.items() if k != "evaluated"} for g in gens]  # noqa: E731
    assert drop(ResultsStore(db).generations("search")) == drop(full_db.generations("search"))
    other = RegularizedEvolution(space, Counting(), ResultsStore(tmp_path / "o.sqlite"), cfg.model_copy(update={"seed": 12}), codesign=codesign).run()
    assert [h["key"] for h in other.history] != [h["key"] for h in full.history]


def test_a_tournament_over_the_whole_population_is_allowed_and_picks_its_best(tmp_path):
    """sample_size may equal population (the tournament is then the whole population, so the
    parent is always its best); only a larger sample is refused."""
    cfg = EvolutionConfig(population=6, sample_size=6, children=2, generations=3, seed=1)
    evo = Spy(get_space("full-tiny"), Counting(), ResultsStore(tmp_path / "r.sqlite"), cfg)
    evo.run()
    assert len(evo.tournaments) == 6
    for members, winner in evo.tournaments:
        assert len(members) == 6
        assert next(m for g, m in members if g is winner)["score"] == min(m["score"] for _, m in members)


def test_pareto_tournament_picks_a_non_dominated_member_of_largest_crowding_distance(tmp_path):
    """Among (log loss, flops): d is dominated by a; b and c are the front's extremes (infinite
    crowding distance), a lies between them; a diverged member never wins."""
    evo = RegularizedEvolution(get_space("full-tiny"), Counting(), ResultsStore(tmp_path / "r.sqlite"), CFG, Objective(kind="pareto", pareto_costs=("flops",)))
    members = [
        ("a", {"logloss": 0.45, "flops": 80.0}),
        ("b", {"logloss": 0.40, "flops": 100.0}),
        ("d", {"logloss": 0.50, "flops": 200.0}),
        ("c", {"logloss": 0.50, "flops": 50.0}),
        ("nan", {"logloss": math.inf, "flops": 1.0}),
    ]
    assert evo._select(members) in ("b", "c")
    assert evo._select([members[0], members[2]]) == "a"  # a dominates d
    assert evo._select([members[2], members[4]]) == "d"  # the finite one


def test_result_and_generation_log_report_the_best_and_mean_of_what_was_scored(tmp_path):
    """On a landscape without structure (the score is a hash of the key) the last candidate is not
    the best: the result is the history's minimum, and each logged generation has the best key,
    best score and mean score of its population."""
    import hashlib

    def scrambled(g):
        h = int(hashlib.sha1(g.key.encode()).hexdigest()[:8], 16) / 16**8
        return {**fake_metrics(g), "logloss": 0.3 + h}

    res = ResultsStore(tmp_path / "r.sqlite")
    evo = Spy(get_space("full-tiny"), scrambled, res, CFG)
    out = evo.run()
    score = {h["key"]: h["score"] for h in out.history}
    best = min(out.history, key=lambda h: h["score"])
    assert out.history[-1]["score"] > best["score"]  # the case is exercised
    assert out.best.key == best["key"] and out.best_metrics["logloss"] == best["logloss"]
    gens = res.generations("search")
    assert len(gens) == len(evo.populations) == CFG.generations + 1
    for logged, pop in zip(gens, evo.populations):
        scores = [score[k] for k in pop]
        assert logged["best_score"] == min(scores) and score[logged["best_key"]] == min(scores)
        assert logged["mean_score"] == pytest.approx(sum(scores) / len(scores))
    assert any(min(score[k] for k in pop) < score[pop[-1]] for pop in evo.populations)  # the newest member is not always the best


def test_ranked_lists_each_candidate_once_best_score_first():
    from recnas.search.evolution import EvolutionResult

    history = [{"key": "a", "score": 0.5}, {"key": "b", "score": 0.3}, {"key": "c", "score": 0.9}, {"key": "a", "score": 0.5}, {"key": "d", "score": 0.1}]
    assert EvolutionResult(None, {}, history).ranked() == [("d", 0.1), ("b", 0.3), ("a", 0.5), ("c", 0.9)]


@pytest.mark.parametrize("prob", [0.0, 0.3, 1.0])
def test_codesign_child_mutates_the_hardware_with_its_probability_else_the_architecture(tmp_path, prob):
    """Each co-design child changes one thing: with hardware_mutation_prob its PIM config (the
    architecture kept), otherwise its architecture (the PIM config kept)."""
    cfg = CFG.model_copy(update={"hardware_mutation_prob": prob, "seed": 5})
    evo = RegularizedEvolution(get_space("full-tiny"), Counting(), ResultsStore(tmp_path / "r.sqlite"), cfg, codesign=True)
    hw = 0
    for _ in range(300):
        g = evo.random_genotype()
        c = evo.mutate(g)
        assert (c.arch == g.arch) != (c.hardware == g.hardware)  # exactly one of them changed
        hw += c.arch == g.arch
    assert hw / 300 == pytest.approx(prob, abs=0.07)


def test_codesign_with_every_pim_field_fixed_mutates_the_architecture(tmp_path):
    from recnas.hardware import CHOICES, PIMConfig

    fixed = {k: [getattr(PIMConfig(), k)] for k in CHOICES}
    cfg = CFG.model_copy(update={"hardware_mutation_prob": 1.0})
    evo = RegularizedEvolution(get_space("full-tiny"), Counting(), ResultsStore(tmp_path / "r.sqlite"), cfg, codesign=True, pim_choices=fixed)
    for _ in range(20):
        g = evo.random_genotype()
        c = evo.mutate(g)
        assert c.hardware == g.hardware == PIMConfig() and c.arch != g.arch


def test_diverged_keys_are_those_of_an_infinite_or_nan_log_loss():
    from recnas.search.objective import diverged_keys

    cands = [{"key": "inf", "logloss": math.inf}, {"key": "nan", "logloss": math.nan}, {"key": "ok", "logloss": 0.45}, {"key": "big", "logloss": 1e9}]
    assert diverged_keys(cands) == {"inf", "nan"}


def test_format_targets_by_hand():
    """Thousands separators without decimals from 100 up; 4 significant digits below."""
    from recnas.search.objective import format_targets

    assert format_targets({"flops": 2.5e6, "energy": 123.4, "latency": 99.87, "params": 0.25}) == "flops 2,500,000, energy 123, latency 99.87, params 0.25"


@pytest.mark.parametrize("style", ["real", "nasrec"])
def test_a_search_continued_with_more_generations_extends_it_only_in_the_real_style(tmp_path, style):
    """`real`: the longer search's candidates begin with the shorter one's, so a run folder
    continued with more generations scores only the new ones. `nasrec`: a child's mutation count
    depends on the number of generations G ((G - g) // max(20, G // 5) + 1), so from G = 20 to 40
    the first generation's children already differ: the continued search is another one
    (docs/search.md says so), only the initial population's scores come from the store."""
    space = get_space("full-tiny")
    cfg = EvolutionConfig(population=12, sample_size=4, children=2, generations=20, seed=5, style=style)
    db = tmp_path / "r.sqlite"
    short = RegularizedEvolution(space, Counting(), ResultsStore(db), cfg).run()
    counting = Counting()
    longer = RegularizedEvolution(space, counting, ResultsStore(db), cfg.model_copy(update={"generations": 40})).run()
    keys = lambda out: [h["key"] for h in out.history]  # noqa: E731
    assert keys(longer)[:12] == keys(short)[:12]  # the initial population
    if style == "real":
        assert keys(longer)[: len(short.history)] == keys(short)
        assert counting.calls == len(set(keys(longer)) - set(keys(short)))
    else:
        assert keys(longer)[12:14] != keys(short)[12:14]
        from pathlib import Path

        said = " ".join((Path(__file__).parents[1] / "docs" / "search.md").read_text().split())
        assert "a `nasrec` run folder continued with more generations (from G >= 20 on: 20 to 40 changes the first generation's) does not extend its search" in said


def test_results_store_replaces_a_candidate_stored_again_and_lists_them_in_order(tmp_path):
    res = ResultsStore(tmp_path / "r.sqlite")
    for key, logloss in (("b", 0.5), ("a", 0.3), ("c", math.nan), ("b", 0.2)):  # b scored again: its new metrics stand
        res.put(key, "{}", {"logloss": logloss})
    assert len(res) == 3 and res.get("b") == {"logloss": 0.2} and res.get("z") is None
    assert [r["key"] for r in res.all()] == ["a", "c", "b"]  # in the order stored
    assert [r["key"] for r in res.by_logloss()] == ["b", "a", "c"]  # lowest first, NaN last


def test_results_store_keeps_each_runs_generations_apart_and_replaces_one_logged_again(tmp_path):
    res = ResultsStore(tmp_path / "r.sqlite")
    res.log_generation("a", 1, "k1", 0.5, 0.6, 4)
    res.log_generation("a", 0, "k0", 0.7, 0.8, 4)
    res.log_generation("b", 0, "kb", 0.1, 0.2, 2)
    res.log_generation("a", 1, "k2", 0.4, 0.5, 5)  # generation 1 replayed
    assert [(g["generation"], g["best_key"], g["evaluated"]) for g in res.generations("a")] == [(0, "k0", 4), (1, "k2", 5)]
    res.clear_generations("a")
    assert res.generations("a") == [] and [g["best_key"] for g in res.generations("b")] == ["kb"]
