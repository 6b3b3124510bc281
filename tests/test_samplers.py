import itertools
from collections import Counter

import numpy as np
import pytest

from recnas.errors import ConfigError
from recnas.space import get_space
from recnas.space.mutation import mutate
from recnas.space.samplers import ArchSampler, encode, random_architecture


def test_each_operator_is_chosen_at_its_expected_rate():
    space = get_space("full", n_blocks=4)
    s = ArchSampler(space, seed=0)
    archs = [s.sample() for _ in range(1500)]
    for kind, ops in (("dense_ops", space.dense_ops), ("sparse_ops", space.sparse_ops)):
        picks = [op for a in archs for b in a.blocks for op in getattr(b, kind)]
        assert len(picks) == 1500 * 4  # single operator per block
        for op in ops:
            rate = picks.count(op) / len(picks)
            assert abs(rate - 1 / len(ops)) < 0.03, (op, rate)
    dims = [b.dense_dim for a in archs for b in a.blocks]
    assert abs(dims.count(1024) / len(dims) - 1 / 8) < 0.02
    # any-connection: in the last block each source is connected about half the time (non-empty subsets)
    last = [a.blocks[-1].dense_inputs for a in archs]
    rate = np.mean([0 in x for x in last])
    assert abs(rate - 8 / 15) < 0.04


def test_single_path_and_any_path_shapes():
    space = get_space("full", n_blocks=5)
    sp = [ArchSampler(space, "single-path", seed=1).sample() for _ in range(20)]
    assert all(len(b.dense_inputs) == 1 and len(b.sparse_inputs) == 1 and len(b.dense_ops) == 1 for a in sp for b in a.blocks)
    s = ArchSampler(space, "any-path", seed=1)
    ap = [s.sample() for _ in range(200)]
    assert any(len(b.dense_ops) > 1 for a in ap for b in a.blocks)
    assert any(len(b.sparse_ops) == 3 for a in ap for b in a.blocks)


def test_sampler_is_reproducible_and_resumable():
    space = get_space("small")
    for strategy in ("single-op-any-conn", "farthest-greedy"):
        a = ArchSampler(space, strategy, seed=5)
        seq = [a.sample().hash for _ in range(10)]
        b = ArchSampler(space, strategy, seed=5)
        first = [b.sample().hash for _ in range(4)]
        state = b.state_dict()
        c = ArchSampler(space, strategy, seed=999)
        c.load_state_dict(state)
        assert first + [c.sample().hash for _ in range(6)] == seq
    with pytest.raises(ConfigError, match="unknown sampler"):
        ArchSampler(space, "random-walk")


def test_farthest_greedy_spreads_samples():
    space = get_space("full", n_blocks=3)

    def mean_gap(strategy):
        s = ArchSampler(space, strategy, seed=2)
        codes = [encode(s.sample(), space) for _ in range(200)]
        # distance of each sample to its nearest neighbour among the previous 16
        return np.mean([min((codes[i] != codes[k]).sum() for k in range(i - 16, i)) for i in range(16, len(codes))])

    assert mean_gap("farthest-greedy") > mean_gap("single-op-any-conn") + 2


def test_mutation_changes_exactly_one_decision():
    space = get_space("full")
    rng = np.random.default_rng(0)
    for _ in range(100):
        parent = random_architecture(rng, space)
        child = mutate(parent, space, rng)
        child.validate_for(space)
        diff = (encode(parent, space) != encode(child, space)).sum()
        assert diff in (1, 2), diff  # a toggled input flips one bit; a changed op or dim flips two
        changed = [i for i, (p, c) in enumerate(zip(parent.blocks, child.blocks)) if p != c]
        assert len(changed) == 1


@pytest.mark.parametrize("overrides", [dict(n_blocks=1, dense_dims=(16,), sparse_dims=(16,)), dict(n_blocks=2, dense_dims=(16,), sparse_dims=(16,))])
def test_mutation_always_changes_an_architecture_that_has_a_neighbour(overrides):
    # small space: FC is the only dense operator, so most draws of (block, kind) change nothing;
    # 20 unlucky draws in a row used to return the parent itself
    space = get_space("small", **overrides)
    rng = np.random.default_rng(0)
    for _ in range(600):
        parent = random_architecture(rng, space)
        child = mutate(parent, space, rng)
        child.validate_for(space)
        assert child.hash != parent.hash
        assert (encode(parent, space) != encode(child, space)).sum() in (1, 2)


def test_mutation_of_an_architecture_without_neighbours_returns_it():
    space = get_space("small", n_blocks=1, sparse_ops=("dot",), dense_dims=(16,), sparse_dims=(16,))
    rng = np.random.default_rng(0)
    parent = random_architecture(rng, space)
    assert mutate(parent, space, rng).hash == parent.hash


@pytest.mark.parametrize("key", ["candidates", "memory"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_farthest_greedy_needs_at_least_one_candidate_and_one_remembered_path(key, value):
    # candidates=0 crashed the second draw with numpy's "argmax of an empty sequence";
    # memory=0 silently drew every path as single-op-any-conn does
    with pytest.raises(ConfigError, match=f"sampler {key} must be a positive integer"):
        ArchSampler(get_space("small"), "farthest-greedy", **{key: value})


def _rates(values) -> dict:
    return {v: n / len(values) for v, n in Counter(values).items()}


@pytest.mark.parametrize("strategy", ["single-op-any-conn", "single-path", "any-path"])
def test_documented_distributions_of_operators_inputs_and_widths(strategy):
    """docs/training.md: widths uniform; one operator (uniform) or any non-empty set of them;
    one input (uniform over sources) or any non-empty set of them, each set equally likely.
    Checked on the last block of 3 (3 sources: 7 non-empty input sets; 3 ops: 7 op sets)."""
    space = get_space("full", n_blocks=3)
    n = 20_000 if strategy == "single-op-any-conn" else 8_000
    s = ArchSampler(space, strategy, seed=4)
    blocks = [s.sample().blocks[2] for _ in range(n)]
    tol = 4 * np.sqrt(0.25 / n)  # about 4 standard errors of a rate

    def uniform(values, support):
        rates = _rates(values)
        assert set(rates) == set(support), (set(rates), set(support))
        for v in support:
            assert abs(rates[v] - 1 / len(support)) < tol, (v, rates[v])

    subsets = lambda items: [tuple(x for x, m in zip(items, mask) if m) for mask in itertools.product([0, 1], repeat=len(items)) if any(mask)]  # noqa: E731
    uniform([b.dense_dim for b in blocks], space.dense_dims)
    uniform([b.sparse_dim for b in blocks], space.sparse_dims)
    for kind, ops in (("dense_ops", space.dense_ops), ("sparse_ops", space.sparse_ops)):
        uniform([getattr(b, kind) for b in blocks], subsets(tuple(sorted(ops))) if strategy == "any-path" else [(o,) for o in ops])
    for kind in ("dense_inputs", "sparse_inputs"):
        uniform([getattr(b, kind) for b in blocks], [(j,) for j in range(3)] if strategy == "single-path" else subsets((0, 1, 2)))


@pytest.mark.parametrize("strategy", ["single-op-any-conn", "single-path", "any-path", "farthest-greedy"])
def test_sampler_state_survives_a_weights_only_checkpoint(strategy):
    import io

    import torch

    space = get_space("full-tiny")
    ref = ArchSampler(space, strategy, seed=3)
    expected = [ref.sample().hash for _ in range(12)]
    first = ArchSampler(space, strategy, seed=3)
    head = [first.sample().hash for _ in range(5)]
    buf = io.BytesIO()
    torch.save({"sampler": first.state_dict()}, buf)
    buf.seek(0)
    resumed = ArchSampler(space, strategy, seed=0)
    resumed.load_state_dict(torch.load(buf, weights_only=True)["sampler"])
    assert head + [resumed.sample().hash for _ in range(7)] == expected


@pytest.mark.parametrize("name,overrides", [("full", {"n_blocks": 4}), ("small", {"n_blocks": 3}), ("full-tiny", {}), ("small", {"n_blocks": 2, "dense_dims": (16,), "sparse_dims": (16,)})])
def test_every_mutation_changes_exactly_one_decision(name, overrides):
    """One field of one block: another single operator, another width, or one input added or
    dropped (never two inputs, nor a dense and a sparse change at once, which the encoding's
    1-or-2-bit test above would let through); always valid, different, and one of the parent's
    listed neighbours; embedding widths kept."""
    from recnas.space.mutation import FIELDS, _neighbours

    space = get_space(name, **overrides)
    rng = np.random.default_rng(1)
    kinds = Counter()
    for draw in range(1000):
        parent = random_architecture(rng, space).model_copy(update={"emb_dims": (4, 8)})
        child = mutate(parent, space, rng)
        child.validate_for(space)
        assert child.emb_dims == (4, 8)
        changed = [(i, f) for i, (p, c) in enumerate(zip(parent.blocks, child.blocks)) for f in FIELDS.values() if getattr(p, f) != getattr(c, f)]
        assert len(changed) == 1, changed
        i, f = changed[0]
        old, new = getattr(parent.blocks[i], f), getattr(child.blocks[i], f)
        if f.endswith("_inputs"):
            assert len(set(old) ^ set(new)) == 1 and new and all(0 <= j <= i for j in new)
        elif f.endswith("_ops"):
            assert len(old) == len(new) == 1
        kinds[f] += 1
        if draw < 40:  # (slow)
            assert child.hash in {a.hash for a in _neighbours(parent, space)}
    free = {f for f in FIELDS.values() if not (f == "dense_ops" and len(space.dense_ops) == 1) and not (f.endswith("_dim") and len(getattr(space, f + "s")) == 1)}
    assert set(kinds) == free  # every decision that can change does, at some point


@pytest.mark.parametrize("max_tries, parents, draws", [(20, 3, 2000), (0, 1, 500)])
def test_mutation_reaches_every_one_decision_neighbour_and_nothing_else(max_tries, parents, draws):
    """Every decision of every block can change, to each of its other values (an input toggle
    can add or drop each source 0..i, the previous block's output included), by the random
    draws or by the fallback over the listed neighbours (max_tries=0: the fallback alone)."""
    from recnas.space.mutation import FIELDS, KINDS, _alternatives, _neighbours

    space = get_space("full-tiny")
    rng = np.random.default_rng(0)
    for _ in range(parents):
        parent = random_architecture(rng, space)
        for b in parent.blocks:
            for kind in KINDS:
                if not kind.endswith("_input"):
                    assert getattr(b, FIELDS[kind]) not in _alternatives(b, space, kind)  # only values it can change to
        neighbours = {a.hash for a in _neighbours(parent, space)}
        assert len(neighbours) > 20
        assert {mutate(parent, space, rng, max_tries=max_tries).hash for _ in range(draws)} == neighbours


def test_input_toggle_from_a_sole_input_adds_each_other_source_equally_often():
    """Dropping the only input is not allowed, so the draw that would drop it adds another
    source instead, uniformly: each of the 3 other sources of 4 is added a third of the time."""
    from recnas.space.mutation import _toggle

    rng = np.random.default_rng(0)
    n = 12_000
    rates = _rates([_toggle(rng, (2,), 4) for _ in range(n)])
    assert set(rates) == {(0, 2), (1, 2), (2, 3)}
    for r in rates.values():
        assert abs(r - 1 / 3) < 4 * np.sqrt(0.25 / n)


@pytest.mark.parametrize("candidates, memory", [(1, 4), (3, 2), (8, 16)])
def test_farthest_greedy_keeps_the_candidate_farthest_from_the_remembered_paths(candidates, memory):
    """docs/training.md: each step draws `candidates` single-op-any-conn paths and keeps the one whose
    Hamming distance to its nearest of the last `memory` kept paths is largest (the first such);
    the first step, with nothing remembered, is one plain draw."""
    space = get_space("full-tiny")
    s = ArchSampler(space, "farthest-greedy", seed=6, candidates=candidates, memory=memory)
    rng = np.random.default_rng(6)  # the sampler's stream, replayed
    kept = [random_architecture(rng, space)]
    assert s.sample() == kept[0]
    for _ in range(30):
        cands = [random_architecture(rng, space) for _ in range(candidates)]
        past = [encode(a, space) for a in kept[-memory:]]
        dist = [min(int((encode(c, space) != p).sum()) for p in past) for c in cands]
        kept.append(cands[dist.index(max(dist))])
        assert s.sample() == kept[-1]


def test_a_sampler_that_has_drawn_goes_on_from_a_loaded_state_alone():
    """load_state_dict replaces farthest-greedy's remembered paths: it does not add them to the
    ones this sampler drew itself."""
    space = get_space("full-tiny")
    ref = ArchSampler(space, "farthest-greedy", seed=5, candidates=4, memory=6)
    seq = [ref.sample().hash for _ in range(12)]
    b = ArchSampler(space, "farthest-greedy", seed=5, candidates=4, memory=6)
    head = [b.sample().hash for _ in range(3)]
    state = b.state_dict()
    used = ArchSampler(space, "farthest-greedy", seed=99, candidates=4, memory=6)
    for _ in range(3):  # 3 + 3 remembered paths fit memory 6: they would all count
        used.sample()
    used.load_state_dict(state)
    assert head + [used.sample().hash for _ in range(9)] == seq


def test_the_jobs_farthest_greedy_draws_8_and_remembers_16_as_documented():
    """docs/training.md: "8 single-op-any-conn draws ... among the 16 paths it sampled last"."""
    from recnas.space.samplers import make_sampler

    s = make_sampler("farthest-greedy", get_space("full-tiny"), 3)
    assert s.candidates == 8 and s.history.maxlen == 16
    ref = ArchSampler(get_space("full-tiny"), "farthest-greedy", seed=3, candidates=8, memory=16)
    assert [s.sample() for _ in range(20)] == [ref.sample() for _ in range(20)]
