"""Budget, penalty, adaptive sampler, REINFORCE search and the stability report."""

import numpy as np
import pytest

from recnas.embedding.budget import MIB, params_to_mib, parse_widths, penalty, resolve_budget, table_params
from recnas.embedding.config import EmbedSearchConfig, SearchSettings
from recnas.embedding.pipeline import run_search, stability
from recnas.embedding.samplers import WidthSampler
from recnas.embedding.search import reinforce_search, repair_to_budget
from recnas.errors import ConfigError
from tests.test_embedding_helpers import make_planted_store

CHOICES = (2, 4, 8, 16)


def test_penalty_is_zero_under_budget_and_grows_monotonically_above():
    budget = 1000
    assert penalty(0, budget, 2.0) == penalty(999, budget, 2.0) == penalty(1000, budget, 2.0) == 0.0
    over = [penalty(p, budget, 2.0) for p in range(1000, 3001, 100)]
    assert all(b > a for a, b in zip(over, over[1:]))
    assert penalty(1500, budget, 2.0) == pytest.approx(1.0)


def test_budget_resolution_and_clear_errors():
    vocab = [100, 50]
    assert resolve_budget(vocab, CHOICES, budget_params=600) == 600
    assert resolve_budget(vocab, (16, 2, 8), budget_params=300) == 300  # the floor is the smallest width, in any order
    with pytest.raises(ConfigError, match="--budget-params must be positive, got 0"):
        resolve_budget(vocab, CHOICES, budget_params=0)
    assert resolve_budget(vocab, CHOICES, budget_mb=1.0) == MIB // 4
    with pytest.raises(ConfigError, match="cannot be met.*needs 300"):
        resolve_budget(vocab, CHOICES, budget_params=299)
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_budget(vocab, CHOICES)
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_budget(vocab, CHOICES, budget_params=10, budget_mb=1.0)
    for bad in (-1.0, float("inf"), float("nan")):  # inf overflowed int() with a traceback
        with pytest.raises(ConfigError, match="positive, finite"):
            resolve_budget(vocab, CHOICES, budget_mb=bad)
    with pytest.raises(ConfigError, match="--budget-mb 1e\\+308 is too large"):  # finite, but its parameter count is not
        resolve_budget(vocab, CHOICES, budget_mb=1e308)


def test_refine_spends_leftover_budget_only_where_the_score_improves():
    from recnas.embedding.search import refine

    score = lambda w: -np.log2(w[0]) - 0.1 * np.log2(w[2])  # field 1 does not matter
    assert refine([2, 2, 2], score, CHOICES, [10, 10, 10], budget=10 * (16 + 2 + 4)) == [16, 2, 4]
    assert refine([2, 2, 2], score, CHOICES, [10, 10, 10], budget=10 * 48) == [16, 2, 16]  # room left, but field 1 would not help


def test_parse_widths():
    assert parse_widths("16, 2,4,4") == (2, 4, 16)
    for bad in ("", "a,b", "0,2", "-2", "2,,4", "2,4,"):
        with pytest.raises(ConfigError, match="--widths"):
            parse_widths(bad)


def test_repair_shrinks_the_cheapest_fields_until_within_budget():
    vocab = [10, 1000, 10]
    log_p = np.log(np.full((3, 4), 0.25))
    fixed = repair_to_budget([16, 16, 16], CHOICES, log_p, vocab, budget=10 * 16 * 2 + 1000 * 2)
    assert table_params(vocab, fixed) <= 10 * 16 * 2 + 1000 * 2
    assert fixed == [16, 2, 16]  # equal policy regret: shrink the field that saves the most


def test_adaptive_sampler_moves_mass_to_still_improving_widths_and_back():
    s = WidthSampler(n_fields=2, n_choices=4, adaptive=True, seed=0, floor=0.4, warmup=5)
    rng = np.random.default_rng(0)
    for t in range(400):  # field 0 width index 1 keeps improving; everything else is flat
        pick = s.sample()
        loss = 0.7 - (0.0015 * t if pick[0] == 1 else 0.0) + 0.001 * rng.standard_normal()
        s.update(pick, loss)
    p = s.probs()
    assert np.allclose(p.sum(1), 1.0) and (p >= 0.4 / 4 - 1e-12).all()
    assert p[0, 1] > 0.4 and p[0, 1] == p[0].max()
    for _ in range(600):  # the improving width settles: its extra mass decays
        pick = s.sample()
        s.update(pick, 0.1 + 0.001 * rng.standard_normal())
    assert s.probs()[0, 1] < p[0, 1] - 0.1
    uniform = WidthSampler(2, 4, adaptive=False)
    uniform.update(np.array([1, 1]), 0.5)
    assert np.allclose(uniform.probs(), 0.25)


def test_sampler_state_round_trip_reproduces_draws():
    a = WidthSampler(3, 4, seed=1, warmup=1)
    for t in range(30):
        a.update(a.sample(), 1.0 / (t + 1))
    state = a.state_dict()
    a.update(a.sample(), 5.0)  # a state taken is a snapshot: later updates do not reach it
    b = WidthSampler(3, 4, seed=99, warmup=1)
    b.load_state_dict(state)
    a.load_state_dict(state)
    assert all((a.sample() == b.sample()).all() for _ in range(10))
    assert (a.fast == b.fast).all() and (a.count == b.count).all() and a.count.sum() == 3 * 30


def test_reinforce_finds_the_useful_fields_under_budget_on_a_known_score():
    vocab = [50] * 6
    useful = np.array([1, 1, 0, 0, 0, 1])  # loss drops with width only on these fields

    def score(widths):
        return 0.5 - 0.02 * float(np.sum(useful * np.log2(widths)))

    budget = 50 * (16 * 3 + 2 * 3)
    cfg = SearchSettings(iterations=120, samples_per_iter=8, policy_lr=0.1, penalty_weight=1.0)
    res = reinforce_search(score, vocab, CHOICES, budget, cfg, seed=0)
    assert res.params <= budget
    assert res.widths == [16, 16, 2, 2, 2, 16]  # the optimum, exactly at the budget
    probs = np.array(res.probs)  # the policy itself learnt it (refine alone would climb there from any start)
    assert (probs[[0, 1], 3] > 0.9).all() and (probs[[2, 3, 4], 0] > 0.9).all()
    spread = reinforce_search(score, vocab, CHOICES, budget, cfg.model_copy(update={"entropy_coef": 0.05}), seed=0)
    assert np.array(spread.probs).max(1).mean() < probs.max(1).mean() - 0.3  # the entropy bonus keeps the policy spread
    again = reinforce_search(score, vocab, CHOICES, budget, cfg, seed=0)
    assert again.widths == res.widths and again.history == res.history  # deterministic


def test_stability_report():
    rep = stability([[2, 4, 8], [2, 8, 8], [2, 4, 16]], ["a", "b", "c"])
    assert [f["modal_width"] for f in rep["per_field"]] == [2, 4, 8]
    assert [f["agreement"] for f in rep["per_field"]] == pytest.approx([1, 2 / 3, 2 / 3])
    assert rep["overall_agreement"] == pytest.approx(7 / 9) and not rep["all_seeds_identical"]
    assert not stability([[2, 4], [2, 8]], ["a", "b"])["all_seeds_identical"] and stability([[2, 4], [2, 4]], ["a", "b"])["all_seeds_identical"]


FAST = {
    "widths": list(CHOICES), "model": {"hidden": [32]}, "supernet": {"steps": 300, "batch_size": 128, "lr": 3e-3},
    "search": {"iterations": 40, "samples_per_iter": 8, "val_rows": 600, "policy_lr": 0.2},
}


def test_search_gives_noise_fields_the_smallest_widths_and_stays_under_budget(tmp_path):
    store = make_planted_store(tmp_path / "planted", rows=8000, vocab=20, strength=3.0)  # fields S0, S1 signal; N2, N3 noise
    budget = 20 * (16 + 16 + 2 + 2) + 20  # 20 parameters no wider width fits: budget_used < 1 (at 1, inverted it read the same)
    cfg = EmbedSearchConfig.from_dict(FAST)
    report = run_search(store, cfg, budget, seeds=2, do_retrain=False)
    for run in report["runs"] + [report]:
        widths = run["widths"] if "widths" in run else run["emb_dims"]
        assert table_params(store.meta.vocab_sizes, widths) <= budget
        assert np.mean(widths[2:]) < np.mean(widths[:2]), widths
    assert report["emb_dims"][2:] == [2, 2]
    assert report["stability"]["seeds"] == 2
    assert [r["seed"] for r in report["runs"]] == [cfg.seed, cfg.seed + 1]  # each seed its own supernet and search
    assert report["budget_used"] == pytest.approx(report["params"] / budget) and report["params"] < budget and report["params"] == table_params(store.meta.vocab_sizes, report["emb_dims"])
    assert report["mib"] == params_to_mib(report["params"]) < report["budget_mib"] == params_to_mib(budget)


def test_uniform_sampler_search_is_deterministic(tmp_path):
    store = make_planted_store(tmp_path / "planted", rows=2000, vocab=10)
    cfg = EmbedSearchConfig.from_dict({**FAST, "supernet": {"steps": 30, "batch_size": 128, "sampler": "uniform"}, "search": {"iterations": 5, "val_rows": 200}})
    a, b = (run_search(store, cfg, 10 * 4 * 4, do_retrain=False) for _ in range(2))
    assert a["runs"][0]["history"] == b["runs"][0]["history"] and a["emb_dims"] == b["emb_dims"]
    assert np.allclose(a["runs"][0]["sampler_final_probs"], 0.25)


def test_a_second_search_on_a_busy_out_is_refused_before_it_trains(tmp_path, monkeypatch):
    """--out is held for the whole search: a second search on it ran to the end and then lost
    its work ("already exists"), or with --overwrite replaced the first one's result."""
    import recnas.embedding.pipeline as pipeline
    from tests.conftest import locked_elsewhere

    store = make_planted_store(tmp_path / "planted", rows=2000, vocab=10)
    monkeypatch.setattr(pipeline, "search_one_seed", lambda *a, **k: pytest.fail("trained while another run held --out"))
    out = tmp_path / "result"
    with locked_elsewhere(out):
        with pytest.raises(ConfigError, match="is being written by another recnas run"):
            run_search(store, EmbedSearchConfig.from_dict(FAST), 10 * 4 * 4, out=out, do_retrain=False)
    assert not out.exists()


def test_seeds_past_the_largest_seed_are_refused_before_training(tmp_path, monkeypatch):
    """--seed S --seeds K runs seeds S..S+K-1: past the largest seed the last ones were run anyway."""
    import recnas.embedding.pipeline as pipeline
    from recnas.configs import SEED_MAX

    store = make_planted_store(tmp_path / "planted", rows=2000, vocab=10)
    monkeypatch.setattr(pipeline, "search_one_seed", lambda *a, **k: pytest.fail("trained"))
    cfg = EmbedSearchConfig.from_dict({**FAST, "seed": SEED_MAX})
    with pytest.raises(ConfigError, match=rf"--seeds 2 from seed {SEED_MAX} runs up to seed {SEED_MAX + 1}, past the largest seed"):
        run_search(store, cfg, 10 * 4 * 4, seeds=2, do_retrain=False)


def test_a_store_without_training_rows_is_refused_before_training(tmp_path, monkeypatch):
    """A store prepared with --split none (every row in test, for scoring) has no training rows:
    the supernet's epoch-after-epoch loop over its empty train split never yielded a batch and
    `recnas embed search` hung forever. Refused first, as the training commands refuse it."""
    from recnas.data.prepare import prepare
    from recnas.data.store import CTRStore
    from recnas.data.synthetic import generate
    from recnas.errors import DataError

    generate(tmp_path / "synth", rows=200, raw_out=tmp_path / "day.txt")
    prepare("criteo", tmp_path / "day.txt", tmp_path / "scoring", split="none")
    store = CTRStore(tmp_path / "scoring")
    import recnas.embedding.pipeline as pipeline

    monkeypatch.setattr(pipeline, "search_one_seed", lambda *a, **k: pytest.fail("trained on a store without training rows (the loop never ends)"))
    out = tmp_path / "result"
    with pytest.raises(DataError, match="the train split has no rows: .* prepared with --split none"):
        run_search(store, EmbedSearchConfig.from_dict({**FAST, "supernet": {**FAST["supernet"], "steps": 5}}), 100_000, out=out, do_retrain=False)
    assert not out.exists()


def test_budget_counts_every_table_row_including_the_oov_id_and_mib_is_float32():
    vocab = [3, 5, 7]  # meta.vocab_sizes: id 0 (OOV/rare) is one of each field's rows
    assert table_params(vocab, [2, 4, 8]) == 3 * 2 + 5 * 4 + 7 * 8
    assert resolve_budget(vocab, CHOICES, budget_mb=0.5) == 0.5 * MIB // 4
    assert resolve_budget(vocab, CHOICES, budget_params=2 * 15) == 30  # exactly sum_i vocab_i * min(widths): allowed
    with pytest.raises(ConfigError, match="needs 30"):
        resolve_budget(vocab, CHOICES, budget_mb=29 * 4 / MIB)


def test_adaptive_sampler_probabilities_follow_the_documented_rule():
    s = WidthSampler(n_fields=3, n_choices=3, adaptive=True, seed=0, floor=0.3, warmup=20)
    s.count[:] = 20
    s.fast[:] = [[0.5, 0.6, 0.7], [0.5, 0.5, 0.5], [0.4, 0.4, 0.4]]
    s.slow[:] = [[0.6, 0.6, 0.8], [0.5, 0.4, 0.5], [0.5, 0.3, 0.5]]
    gap = np.array([0.1 / 0.6, 0.0, 0.1 / 0.8])
    p = s.probs()
    assert p[0] == pytest.approx(0.3 / 3 + 0.7 * gap / gap.sum())
    assert p[1] == pytest.approx([1 / 3] * 3)  # no width still improving: uniform
    assert p[2] == pytest.approx(0.3 / 3 + 0.7 * np.array([0.5, 0, 0.5]))
    s.count[2, 0] = 19  # seen fewer than `warmup` times: no adaptive share yet
    assert s.probs()[2] == pytest.approx(0.3 / 3 + 0.7 * np.array([0, 0, 1]))
    assert np.allclose(s.probs().sum(1), 1.0) and (s.probs() >= 0).all()
    draws = np.array([s.sample() for _ in range(6000)])
    for f in range(3):
        assert np.bincount(draws[:, f], minlength=3) / 6000 == pytest.approx(s.probs()[f], abs=0.025)
    t = WidthSampler(1, 2, seed=0)
    t.update(np.array([1]), 1.0)  # first sighting sets both averages
    t.update(np.array([1]), 0.0)
    assert (t.fast[0, 1], t.slow[0, 1], t.count[0].tolist()) == (pytest.approx(0.8), pytest.approx(0.98), [0, 2])


def test_reinforce_reward_has_the_budget_penalty_and_a_moving_average_baseline():
    vocab, budget, weight = [10, 10, 10], 10 * 24, 2.0
    seen = []

    def score(widths):
        seen.append(list(widths))
        return 0.5 - 0.01 * float(np.sum(np.log2(widths)))

    cfg = SearchSettings(iterations=6, samples_per_iter=4, penalty_weight=weight, baseline_decay=0.9)
    res = reinforce_search(score, vocab, CHOICES, budget, cfg, seed=3)
    b = None
    for it, entry in enumerate(res.history):
        batch = seen[it * 4 : (it + 1) * 4]
        reward = np.mean([-(0.5 - 0.01 * np.sum(np.log2(w))) - weight * max(0.0, table_params(vocab, w) / budget - 1) for w in batch])
        assert entry["reward"] == pytest.approx(reward, abs=1e-6)
        b = 0.9 * (reward if b is None else b) + 0.1 * reward  # the first iteration's baseline is its own mean
        assert entry["baseline"] == pytest.approx(b, abs=1e-6)
    assert any(table_params(vocab, w) > budget for w in seen[:24])  # the penalty was exercised
    assert res.params <= budget and all(w in CHOICES for w in res.widths)


def test_repair_follows_the_documented_rule_and_stays_in_budget_and_candidates():
    rng = np.random.default_rng(0)
    choices = list(CHOICES)
    for _ in range(500):
        n = int(rng.integers(1, 5))
        vocab, widths = [int(v) for v in rng.integers(1, 50, n)], [int(w) for w in rng.choice(choices, n)]
        log_p = np.log(rng.dirichlet(np.ones(len(choices)), n) if rng.random() < 0.7 else np.full((n, len(choices)), 0.25))  # uniform: ties
        low, high = table_params(vocab, [min(choices)] * n), table_params(vocab, widths)
        budget = int(rng.integers(low, max(high, low) + 2))
        fixed = repair_to_budget(widths, choices, log_p, vocab, budget)
        assert table_params(vocab, fixed) <= budget and all(w in choices for w in fixed)
        idx = [choices.index(w) for w in widths]  # replay: least log-prob lost per parameter saved, ties save most
        while table_params(vocab, [choices[k] for k in idx]) > budget:
            steps = [((log_p[f, k] - log_p[f, k - 1]) / (vocab[f] * (choices[k] - choices[k - 1])), -vocab[f] * (choices[k] - choices[k - 1]), f) for f, k in enumerate(idx) if k]
            idx[min(steps)[2]] -= 1
        assert fixed == [choices[k] for k in idx]  # so unchanged when already within budget


def test_consensus_is_the_modal_width_repaired_with_the_mean_policy():
    from types import SimpleNamespace

    from recnas.embedding.pipeline import consensus

    store = SimpleNamespace(meta=SimpleNamespace(vocab_sizes=[10, 10]))
    p_a = [[0.1, 0.1, 0.1, 0.7], [0.1, 0.1, 0.7, 0.1]]
    p_b = [[0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]]
    runs = [{"widths": [16, 16], "probs": p_a}, {"widths": [16, 16], "probs": p_b}, {"widths": [8, 4], "probs": p_a}]
    assert consensus(runs, store, CHOICES, 10 * 32, ["a", "b"]) == [16, 16]  # modal, within budget: kept
    # over budget by one step: the mean policy (field a: 16 -> 8 costs log(0.5/0.3); b: log(0.3/0.5) < 0) steps b down
    assert consensus(runs, store, CHOICES, 10 * 24, ["a", "b"]) == [16, 8]
    tie = [{"widths": [2, 16], "probs": p_a}, {"widths": [4, 8], "probs": p_a}]
    assert consensus(tie, store, CHOICES, 10 * 32, ["a", "b"]) == [2, 8]  # ties -> the smaller width


def test_nan_weights_after_the_last_supernet_step_are_a_divergence(tmp_path):
    """The supernet loop read each step's loss, taken before the step's update: NaN weights
    left by its last update scored every configuration NaN, and the policy search then failed
    in torch.multinomial with a traceback ("invalid multinomial distribution")."""
    import torch

    from recnas.data.loader import BatchLoader
    from recnas.embedding.model import EmbeddingSizeNet
    from recnas.embedding.train import train_supernet
    from recnas.errors import TrainingDiverged

    store = make_planted_store(tmp_path / "s", rows=400)
    torch.manual_seed(0)
    net = EmbeddingSizeNet(store.meta, max_width=4, proj_dim=4, hidden=(8,))
    net.top[-1].weight.register_hook(lambda g: g * float("nan"))  # every loss finite, the next weights NaN
    loader = BatchLoader(store.split("train"), 64, shuffle=True, seed=0)
    sampler = WidthSampler(store.meta.n_sparse, 2, seed=0)
    with pytest.raises(TrainingDiverged, match=r"embedding supernet training diverged: the weights hold NaN or inf \(top\.\d+\.weight\) after step 1; lower supernet\.lr"):
        train_supernet(net, loader, sampler, (2, 4), 1, 1e-3)


def test_validation_rows_that_give_nan_logits_are_named(tmp_path):
    """Validation rows of ~3e38 gave the supernet NaN logits there: every configuration scored
    NaN, and the policy search failed in torch.multinomial with a traceback."""
    from recnas.data.store import CTRStore
    from recnas.errors import TrainingDiverged

    from tests.conftest import make_tiny_store

    store = make_tiny_store(tmp_path / "s", n_dense=13)  # 13 of them: the first layer's sums overflow, then inf - inf
    dense = np.load(store.dir / "val" / "dense.npy", mmap_mode="r+")
    dense[:] = 3e38
    dense.flush()
    del dense
    # on the CPU, where the first layer's sums overflow to inf - inf; cuBLAS sums in another
    # order and its logits stayed finite on these rows (H100, 2026-12-07)
    cfg = EmbedSearchConfig.from_dict({**FAST, "device": "cpu", "supernet": {"steps": 2, "batch_size": 64}, "search": {"iterations": 2, "val_rows": 50}})
    with pytest.raises(TrainingDiverged, match=r"embedding search: the supernet's validation log loss is nan \(seed 0\): its weights are finite, but its logits on the validation sample are not \(they overflow\); the val split's dense features reach \|x\| = 3e\+38"):
        run_search(CTRStore(store.dir), cfg, 10_000, do_retrain=False)


def test_consensus_repairs_with_the_mean_of_every_seeds_policy_not_one_seeds():
    """The repair uses the mean policy over all seeds: with policies (a, b, b) or (b, b, a) the
    mean favours field b's 16 (a: 0.5 at 8 vs 0.3 at 16), so a steps down, where the first
    (or last) seed's policy a alone would step b down instead."""
    from types import SimpleNamespace

    from recnas.embedding.pipeline import consensus

    store = SimpleNamespace(meta=SimpleNamespace(vocab_sizes=[10, 10]))
    p_a = [[0.1, 0.1, 0.1, 0.7], [0.1, 0.1, 0.7, 0.1]]
    p_b = [[0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]]
    for order in ([p_a, p_b, p_b], [p_b, p_b, p_a]):
        runs = [{"widths": [16, 16], "probs": p} for p in order]
        assert consensus(runs, store, CHOICES, 10 * 24, ["a", "b"]) == [8, 16], order


def test_one_seeds_report_scores_the_widths_found_and_averages_the_last_20_losses(tmp_path, monkeypatch):
    """search_one_seed: `supernet_last_loss` is the mean of the supernet's last 20 step losses,
    and `supernet_val_logloss` the validation score of the widths the search returned (not of
    the full-width supernet)."""
    import recnas.embedding.pipeline as pipeline
    from recnas.embedding.search import SearchResult

    store = make_planted_store(tmp_path / "planted", rows=600, vocab=10)
    cfg = EmbedSearchConfig.from_dict({**FAST, "device": "cpu", "supernet": {"steps": 3, "batch_size": 64}, "search": {"iterations": 1, "val_rows": 100}})
    monkeypatch.setattr(pipeline, "train_supernet", lambda *a, **k: [float(i) for i in range(100)])
    scored = {}

    def fake_search(score, vocab_sizes, choices, budget, settings, seed, progress=None):
        scored["score"] = score
        return SearchResult(widths=[2, 4, 2, 2], params=table_params(vocab_sizes, [2, 4, 2, 2]), probs=[[0.25] * 4] * 4)

    monkeypatch.setattr(pipeline, "reinforce_search", fake_search)
    val = pipeline.validation_sample(store, 100, 0)
    run = pipeline.search_one_seed(store, cfg, 10**6, 0, val)
    assert run["supernet_last_loss"] == pytest.approx(np.mean(range(80, 100)))  # 89.5
    assert run["widths"] == [2, 4, 2, 2]
    assert run["supernet_val_logloss"] == pytest.approx(scored["score"]([2, 4, 2, 2]), rel=1e-6)
    assert run["supernet_val_logloss"] != pytest.approx(scored["score"]([16] * 4), rel=1e-6)


def test_the_validation_sample_is_val_rows_rows_drawn_with_the_search_seed(tmp_path, monkeypatch):
    """validation_sample takes exactly `rows` val rows, those of the first `rows` of a
    permutation by `seed` (sorted); a search draws it once with cfg.seed and scores every
    seed on that same sample."""
    import torch

    import recnas.embedding.pipeline as pipeline

    store = make_planted_store(tmp_path / "planted", rows=600, vocab=10)
    val = store.split("val")
    dense, sparse, label = pipeline.validation_sample(store, 25, 7)
    idx = np.sort(np.random.default_rng(7).permutation(len(val))[:25])
    assert len(label) == len(dense) == len(sparse) == 25
    assert torch.equal(sparse, torch.from_numpy(np.asarray(val.take(idx).sparse).astype(np.int64)))
    assert torch.equal(label, torch.from_numpy(np.asarray(val.take(idx).label, np.float32)))
    assert len(pipeline.validation_sample(store, 10**6, 7)[2]) == len(val)  # more rows than the split: all of it

    got = []

    def fake_seed(store_, cfg_, budget, seed, val_, bar=None):
        got.append(val_)
        return {"seed": seed, "widths": [2, 2, 2, 2], "probs": [[0.25] * 4] * 4}

    monkeypatch.setattr(pipeline, "search_one_seed", fake_seed)
    cfg = EmbedSearchConfig.from_dict({**FAST, "seed": 5, "search": {**FAST["search"], "val_rows": 30}})
    run_search(store, cfg, 10**6, seeds=2, do_retrain=False)
    want = pipeline.validation_sample(store, 30, 5)
    assert len(got) == 2 and all(len(v[2]) == 30 for v in got)
    assert all(torch.equal(a, b) for v in got for a, b in zip(v, want))


def test_each_seed_initialises_and_shuffles_its_supernet_by_that_seed(tmp_path, monkeypatch):
    """search_one_seed seeds the supernet's initial weights and its batch order with the run's
    seed: the same seed gives the same start, another seed another (the spread over seeds that
    the stability report measures)."""
    import torch

    import recnas.embedding.pipeline as pipeline
    from recnas.embedding.search import SearchResult

    store = make_planted_store(tmp_path / "planted", rows=600, vocab=10)
    cfg = EmbedSearchConfig.from_dict({**FAST, "device": "cpu", "supernet": {"steps": 1, "batch_size": 64}, "search": {"iterations": 1, "val_rows": 50}})
    seen = []

    def capture(net, loader, *a, **k):
        batch = next(iter(loader))
        seen.append((torch.cat([p.detach().flatten() for p in net.parameters()]), [batch.sparse.clone(), batch.label.clone()]))
        return [0.5]

    monkeypatch.setattr(pipeline, "train_supernet", capture)
    monkeypatch.setattr(pipeline, "reinforce_search", lambda *a, **k: SearchResult(widths=[2] * 4, params=0, probs=[[0.25] * 4] * 4))
    val = pipeline.validation_sample(store, 50, 0)
    for seed in (3, 3, 4):
        pipeline.search_one_seed(store, cfg, 10**6, seed, val)
    (w3, b3), (w3_again, b3_again), (w4, b4) = seen
    assert torch.equal(w3, w3_again) and all(torch.equal(x, y) for x, y in zip(b3, b3_again))
    assert not torch.equal(w3, w4)
    assert not all(torch.equal(x, y) for x, y in zip(b3, b4))
