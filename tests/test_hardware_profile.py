from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn as nn

from recnas.data.schema import DatasetMeta
from recnas.errors import ConfigError
from recnas.hardware import PIMConfig, count_costs, example_inputs, measure_latency, module_costs, pim_cost, profile_module
from recnas.space import get_space
from recnas.space.samplers import random_architecture
from recnas.supernet import Subnet, Supernet

META = DatasetMeta(name="t", dense_names=["a", "b", "c"], cat_names=list("vwxyz"), vocab_sizes=[5, 6, 7, 8, 9], rows={})


def _linears(costs):
    return Counter((l.n_in, l.n_out, l.reps, l.bias) for l in costs.layers if l.kind == "linear")


def test_generic_profiling_of_a_subnet_agrees_with_the_analytic_count():
    space = get_space("full-tiny")
    rng = np.random.default_rng(3)
    for _ in range(3):
        arch = random_architecture(rng, space)
        net = Subnet(arch, space, META)
        dense, sparse = example_inputs(net, 2)
        analytic, measured = count_costs(arch, space, META), module_costs(net, dense, sparse)
        assert _linears(measured) == _linears(analytic)  # same crossbar layers, shapes and repeats
        assert measured.flops == analytic.flops and measured.params == analytic.params
        assert profile_module(net, dense, sparse) == (analytic.params, analytic.flops)
        assert 0.8 < measured.elementwise_ops / analytic.elementwise_ops < 1.2  # both approximate, counted differently
        a, m = pim_cost(analytic, parallel=False), pim_cost(measured)
        assert m.crossbars == a.crossbars
        assert m.breakdown["adc"] == pytest.approx(a.breakdown["adc"])


def test_generic_profiling_counts_a_hand_made_module():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.lin = nn.Linear(4, 6)
            self.conv = nn.Conv1d(3, 2, kernel_size=1, bias=False)

        def forward(self, dense, sparse):
            x = self.emb(sparse[:, :3])  # [B, 3, 4]
            y = self.lin(x)  # [B, 3, 6], applied 3 times per sample
            z = self.conv(y)  # [B, 2, 6], applied 6 times per sample
            return (z @ z.transpose(1, 2)).sum((1, 2))  # activation x activation: 2*2*6 MACs

    costs = module_costs(Toy(), torch.zeros(2, 0), torch.zeros(2, 3, dtype=torch.long))
    lin = {l.name.split("#")[0]: l for l in costs.layers}
    assert (lin["lin"].n_in, lin["lin"].n_out, lin["lin"].reps) == (4, 6, 3)
    assert (lin["conv"].n_in, lin["conv"].n_out, lin["conv"].reps, lin["conv"].bias) == (3, 2, 6, False)
    assert lin["emb"].kind == "embedding" and lin["emb"].reads == 12
    assert lin["digital"].macs == 2 * 2 * 6
    assert costs.flops == 2 * (4 * 6 * 3 + 3 * 2 * 6 + 24)
    assert (costs.embedding_params, costs.dense_params) == (40, 30 + 6)
    assert [lin[n].after for n in ("emb", "lin", "conv", "digital")] == [(), ("emb#0",), ("lin#0",), ("conv#0",)]  # a chain


def test_generic_profiling_finds_parallel_branches():
    """Two towers on the same input, merged: each waits only for what it reads, so the PIM
    latency is the longer tower (critical path), not the sum of both."""

    class TwoTowers(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.a1, self.a2, self.b = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
            self.head = nn.Linear(8, 1)

        def forward(self, dense, sparse):
            x = self.emb(sparse).sum(1)  # [B, 4]
            deep = self.a2(torch.relu(self.a1(x)))
            return self.head(torch.cat([deep, self.b(x) * 2], 1)).squeeze(1)

    costs = module_costs(TwoTowers(), torch.zeros(2, 0), torch.zeros(2, 3, dtype=torch.long))
    after = {l.name.split("#")[0]: l.after for l in costs.layers}
    assert after == {"emb": (), "a1": ("emb#0",), "a2": ("a1#0",), "b": ("emb#0",), "head": ("a2#0", "b#0"), "digital": ("head#0",)}
    assert costs.parallel
    par, seq = pim_cost(costs, PIMConfig()), pim_cost(costs, PIMConfig(), parallel=False)
    per = {r.name.split("#")[0]: r.latency_ns for r in par.layers}
    assert par.latency_ns == pytest.approx(per["emb"] + per["a1"] + per["a2"] + per["head"] + per["digital"])
    assert par.latency_ns == pytest.approx(seq.latency_ns - per["b"])


def test_baselines_are_costed_on_the_default_pim_config():
    baselines = pytest.importorskip("recnas.baselines")
    tiny = dict(dlrm=dict(bottom_mlp=[8, 4], top_mlp=[8], embed_dim=4), deepfm=dict(mlp=[8], embed_dim=4), dcnv2=dict(mlp=[8], embed_dim=4, cross_layers=2),
                autoint=dict(embed_dim=4, attention_layers=1, attention_dim=4), xdeepfm=dict(embed_dim=4, cin=[4, 4], mlp=[8]))
    for name, hp in tiny.items():
        model = baselines.build_baseline(name, META, **hp)
        dense, sparse = example_inputs(model, 2)
        costs = module_costs(model, dense, sparse)
        params, flops = profile_module(model, dense, sparse)
        assert costs.params == params == sum(p.numel() for p in model.parameters())
        assert costs.flops == flops > 0
        report = pim_cost(costs, PIMConfig())
        assert report.fits and report.crossbars > 0 and report.energy_pj > report.breakdown["dram"] > 0
        seq = pim_cost(costs, PIMConfig(), parallel=False)
        assert seq.latency_ns == pytest.approx(sum(l.latency_ns for l in report.layers))
        assert 0 < report.latency_ns <= seq.latency_ns  # critical path through the discovered graph
        if name in ("dcnv2", "deepfm"):  # parallel towers: strictly shorter than the chain
            assert report.latency_ns < seq.latency_ns
        if name == "xdeepfm":  # the CIN's 1x1 convolutions are crossbar layers, not digital work
            convs = {l.name.split("#")[0]: l for l in costs.layers if l.name.startswith("cin.convs")}
            assert sorted(convs) == ["cin.convs.0", "cin.convs.1"] and all(l.kind == "linear" for l in convs.values())
            assert (convs["cin.convs.0"].n_in, convs["cin.convs.0"].reps) == (model.fields.n_fields**2, 4)


def test_profiling_leaves_a_model_in_training_mode_untouched():
    """Costing a trained baseline used to run its random profiling batch in training mode: its
    BatchNorm running statistics moved, so the search's results table reported a test log loss
    that was not the saved model's; dropout's work was counted as inference cost too."""
    from recnas.baselines import build_baseline
    from recnas.search.evaluator import model_costs

    model = build_baseline("dlrm", META, bottom_mlp=[8, 4], top_mlp=[8], embed_dim=4, batch_norm=True, dropout=0.5)
    model.train()
    model.bottom.eval()  # a mixed state is restored as it was, module by module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense, sparse = example_inputs(model, 2)
    costs = module_costs(model, dense, sparse)
    profile_module(model, dense, sparse)
    model_costs(model, META, PIMConfig())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and model.top.training and not model.bottom.training
    assert costs.elementwise_ops == module_costs(model.eval(), dense, sparse).elementwise_ops  # no dropout work


def test_measure_latency_on_cpu():
    space = get_space("small-tiny")
    net = Subnet(random_architecture(np.random.default_rng(0), space), space, META)
    net.train()
    r = measure_latency(net, batch_size=8, device="cpu", warmup=1, repeats=5)
    assert 0 < r["p50_ms"] <= r["p90_ms"] and r["mean_ms"] > 0 and r["batch_size"] == 8
    assert net.training  # mode restored
    sup = Supernet(space, META)
    assert measure_latency(sup, 4, warmup=0, repeats=2, arch=net.arch)["mean_ms"] > 0
    with pytest.raises(ConfigError, match="repeats"):
        measure_latency(net, 8, repeats=0)
    with pytest.raises(ConfigError, match="pass `meta`"):
        measure_latency(nn.Linear(2, 1), 8)
    with pytest.raises(ConfigError, match="batch"):
        module_costs(net, torch.zeros(0, 3), torch.zeros(0, 5, dtype=torch.long))


def test_example_inputs_and_latency_without_categorical_fields():
    """A NASRec subnet runs on a store without categorical fields; its random inputs were a
    torch.stack of nothing (RuntimeError), so measure_latency failed on it."""
    meta = DatasetMeta(name="t", dense_names=["a", "b", "c"], cat_names=[], vocab_sizes=[], rows={})
    space = get_space("small-tiny")
    net = Subnet(random_architecture(np.random.default_rng(0), space), space, meta)
    dense, sparse = example_inputs(net, 4)
    assert dense.shape == (4, 3) and sparse.shape == (4, 0) and sparse.dtype == torch.long
    assert measure_latency(net, 4, warmup=0, repeats=1)["mean_ms"] > 0
    assert module_costs(net, dense, sparse).params == sum(p.numel() for p in net.parameters())


# Hand counts: 2 numeric features, 3 fields (vocab 3 + 4 + 5 = 12 ids), embed 4, so 5 fields of
# width 4 (20 flat) wherever numeric features are fields (value x a learnt vector: 2*4 dense params).
# lr: ids 12 (emb), numeric 2 -> 1 without bias + a bias: 3 dense; 2 MACs.
# dlrm (bottom 2-8-4, top 8): bottom 2*8+8 + 8*4+4 = 60, 4 vectors -> 6 pairs + 4 = 10 -> 8 -> 1:
#   88 + 9; MACs 16 + 32 + Gram 4*4*4 + 80 + 8 = 200.
# deepfm (mlp 8): first order 2 + 1 (+ 12 emb), numeric 8, MLP 20*8+8 + 8+1; MACs 2 + 160 + 8
#   (the FM term is elementwise).
# dcnv2 (2 cross layers, mlp 8, parallel): cross 2*(20*20+20), MLP 168, head (20+8)+1, numeric 8;
#   MACs 800 + 160 + 28.
# autoint (1 layer, 2 heads of 4): qkv 4*24, residual 4*8 (no biases), head 5*8+1, numeric 8;
#   MACs per field 96 + 32 (x 5), scores and values 2 x 2 heads x 5*5*4, head 40.
# xdeepfm (cin 4, 4 split, mlp 8): conv 25*4+4 (4 maps, 2 on), conv 2*5*4+4, pooled 2 + 4 -> 1,
#   MLP 177, first order 3, numeric 8; MACs 25*4*4 + 10*4*4 + 6 + 168 + 2.
HAND = {
    "lr": ({}, 3, 12, 2),
    "dlrm": (dict(bottom_mlp=[8, 4], top_mlp=[8], embed_dim=4), 60 + 97, 48, 200),
    "deepfm": (dict(mlp=[8], embed_dim=4), 3 + 8 + 168 + 9, 60, 170),
    "dcnv2": (dict(mlp=[8], embed_dim=4, cross_layers=2), 840 + 168 + 29 + 8, 48, 988),
    "autoint": (dict(embed_dim=4, attention_layers=1, attention_dim=4), 96 + 32 + 41 + 8, 48, 5 * 128 + 400 + 40),
    "xdeepfm": (dict(embed_dim=4, cin=[4, 4], mlp=[8]), 104 + 44 + 7 + 177 + 3 + 8, 60, 400 + 160 + 6 + 168 + 2),
}


@pytest.mark.parametrize("name", list(HAND))
def test_baseline_costs_match_the_hand_count(name):
    from recnas.baselines import build_baseline

    hp, dense_params, emb_params, macs = HAND[name]
    meta = DatasetMeta(name="t", dense_names=["a", "b"], cat_names=list("xyz"), vocab_sizes=[3, 4, 5], rows={})
    model = build_baseline(name, meta, **hp)
    costs = module_costs(model, *example_inputs(model, 3))
    assert (costs.dense_params, costs.embedding_params, costs.flops) == (dense_params, emb_params, 2 * macs)
    assert dense_params + emb_params == sum(p.numel() for p in model.parameters())


def test_supernet_paths_are_profiled_at_the_paths_widths():
    """The supernet running an architecture (sliced) applies the leading slices of its max-width
    weights: the profiled crossbar layers are the architecture's, as counted, not the maxima."""
    space = get_space("full-tiny")
    sup = Supernet(space, META)
    dense, sparse = example_inputs(sup, 2)
    for arch in random_architectures(space, 3, seed=4):
        assert _linears(module_costs(sup, dense, sparse, arch)) == _linears(count_costs(arch, space, META))


def random_architectures(space, n, seed):
    rng = np.random.default_rng(seed)
    return [random_architecture(rng, space, any_ops=k % 2 == 1) for k in range(n)]


def test_embedding_bags_read_every_id():
    """A bag of 3 ids per sample reads 3 rows of 4 values and returns their sum: 12 values read
    per sample (DRAM energy and latency), not the 4 of the pooled output."""

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.bag = nn.EmbeddingBag(10, 4, mode="sum")
            self.out = nn.Linear(4, 1)

        def forward(self, dense, sparse):
            return self.out(self.bag(sparse)).squeeze(1)

    costs = module_costs(Bag(), torch.zeros(2, 0), torch.zeros(2, 3, dtype=torch.long))
    bag = next(l for l in costs.layers if l.kind == "embedding")
    assert bag.reads == 12 and costs.embedding_params == 40


def test_strided_and_padded_1x1_convolutions_count_their_output_positions():
    """A 1x1 convolution is applied once per output position: 3 with stride 2 over 6 positions,
    8 with padding 1, not the input's 6 (its FLOPs, the profiler's, were already right)."""

    class Convs(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.strided = nn.Conv1d(3, 2, kernel_size=1, stride=2)
            self.padded = nn.Conv1d(3, 2, kernel_size=1, padding=1)

        def forward(self, dense, sparse):
            x = self.emb(sparse)  # [B, 3, 6]
            return self.strided(x).sum((1, 2)) + self.padded(x).sum((1, 2))

    costs = module_costs(Convs(), torch.zeros(2, 0), torch.zeros(2, 3, dtype=torch.long))
    reps = {l.name.split("#")[0]: l.reps for l in costs.layers if l.kind == "linear"}
    assert reps == {"strided": 3, "padded": 8}
    assert costs.flops == 2 * 3 * 2 * (3 + 8) and next(l for l in costs.layers if l.kind == "digital").macs == 0


def test_measure_latency_statistics_over_the_timed_repeats_by_hand(monkeypatch):
    """measure_latency times `repeats` calls after `warmup` untimed ones: with a clock that makes
    the warmup call take 100 ms and the timed ones 5, 1, 4, 2, 3 ms, the mean and median are 3
    and the 90th percentile (index round(0.9 * 4) = 4 of the sorted times) is 5."""
    from types import SimpleNamespace

    import recnas.hardware.profile as profile

    durations = iter([0.100, 0.005, 0.001, 0.004, 0.002, 0.003])
    clock = {"now": 0.0}
    space = get_space("small-tiny")
    net = Subnet(random_architecture(np.random.default_rng(0), space), space, META)
    net.register_forward_hook(lambda *_: clock.update(now=clock["now"] + next(durations)))  # each call takes its duration
    monkeypatch.setattr(profile, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))  # this module's clock only
    r = measure_latency(net, batch_size=4, warmup=1, repeats=5)
    assert r["mean_ms"] == pytest.approx(3.0) and r["p50_ms"] == pytest.approx(3.0) and r["p90_ms"] == pytest.approx(5.0)
    assert r["batch_size"] == 4 and r["device"] == "cpu"


def test_example_inputs_need_a_positive_batch_and_draw_every_id():
    """example_inputs refuses a batch of 0 and draws ids over 0..vocab-1 (id 0 included)."""
    space = get_space("small-tiny")
    net = Subnet(random_architecture(np.random.default_rng(0), space), space, META)
    with pytest.raises(ConfigError, match="batch_size must be positive, got 0"):
        example_inputs(net, 0)
    dense, sparse = example_inputs(net, 400)
    assert dense.shape == (400, 3) and [int(sparse[:, f].min()) for f in range(5)] == [0] * 5
    assert [int(sparse[:, f].max()) for f in range(5)] == [v - 1 for v in META.vocab_sizes]


def test_only_plain_1x1_convolutions_are_crossbar_layers():
    """is_crossbar: a Linear and a 1x1 Conv1d map to a crossbar; a wider kernel or a grouped
    1x1 convolution (several small matrices) does not, nor does an embedding."""
    from recnas.hardware import is_crossbar

    assert is_crossbar(nn.Linear(3, 2)) and is_crossbar(nn.Conv1d(4, 4, 1))
    assert not is_crossbar(nn.Conv1d(4, 4, 3)) and not is_crossbar(nn.Conv1d(4, 4, 1, groups=2)) and not is_crossbar(nn.Embedding(5, 2))


def test_reductions_count_their_weighted_input_elements():
    """_ElementwiseCounter: a sum or mean counts 1 op per input element, a softmax SOFTMAX_OPS
    and a layer norm NORM_OPS per element; a copy counts nothing."""
    from recnas.hardware.costs import NORM_OPS, SOFTMAX_OPS
    from recnas.hardware.profile import _ElementwiseCounter

    x = torch.ones(3, 4)
    for fn, per_element in ((lambda t: t.sum(-1), 1), (lambda t: t.mean(), 1), (lambda t: torch.softmax(t, -1), SOFTMAX_OPS),
                            (lambda t: nn.functional.layer_norm(t, (4,)), NORM_OPS), (lambda t: t.clone(), 0)):
        with _ElementwiseCounter() as counter:
            fn(x)
        assert counter.ops == per_element * 12


def test_the_digital_remainder_waits_for_the_last_layer_when_the_output_comes_from_none():
    """module_costs: the unattributed digital work runs after the layers the logits were computed
    from; a model whose output is computed from no recorded layer puts it after the last one."""

    class TwoBranches(nn.Module):
        def __init__(self, join: bool):
            super().__init__()
            self.a, self.b, self.join = nn.Linear(3, 2), nn.Linear(3, 2), join

        def forward(self, dense, sparse):
            ya, yb = self.a(dense), self.b(dense)
            return (ya + yb).sum(-1) if self.join else torch.zeros(dense.shape[0])

    dense, sparse = torch.randn(4, 3), torch.zeros(4, 0, dtype=torch.long)
    assert module_costs(TwoBranches(True), dense, sparse).layers[-1].after == ("a#0", "b#0")
    assert module_costs(TwoBranches(False), dense, sparse).layers[-1].after == ("b#0",)


def test_a_layer_applied_twice_is_two_numbered_nodes_in_order():
    """module_costs names each call of a module `NAME#k` (k = calls so far): a Linear applied
    twice is lin#0 then lin#1, the second waiting for the first; with one name they merged."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, dense, sparse):
            return self.lin(self.lin(dense)).sum(-1)

    costs = module_costs(Twice(), torch.randn(4, 3), torch.zeros(4, 0, dtype=torch.long))
    linears = [l for l in costs.layers if l.name.startswith("lin#")]
    assert [l.name for l in linears] == ["lin#0", "lin#1"] and linears[1].after == ("lin#0",)
