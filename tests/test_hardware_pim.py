import math

import numpy as np
import pytest

from recnas.data.schema import DatasetMeta
from recnas.errors import ConfigError
from recnas.hardware import CHOICES, DEFAULT_CONSTANTS, CostGraph, Layer, PIMConfig, count_costs, map_layer, mutate_pim, pim_choices, pim_cost, random_pim
from recnas.hardware.pim import critical_path
from recnas.space import Architecture, BlockSpec, get_space


def fc_costs(n_in=128, n_out=64, reps=1):
    g = CostGraph()
    g.linear("fc", 0, n_in, n_out, reps=reps)
    return g.costs(1)


def test_worked_example_of_docs():
    """docs/hardware.md: FC 128->64, 128x128 crossbar, 2-bit cells, 8-bit W/A, 1-bit DAC, 8-bit ADC."""
    cfg = PIMConfig(xbar_size=128, cell_bits=2, weight_bits=8, act_bits=8, dac_bits=1, adc_bits=8, cols_per_adc=128)
    m = map_layer(128, 64, cfg)
    assert (m.k, m.rows, m.cols, m.crossbars, m.slices) == (4, 1, 2, 2, 8)
    r = pim_cost(fc_costs(), cfg)
    expected = dict(adc=2048 * 1.67, dac=2048 * 0.417, crossbar=8 * 2 * 30.0, shift_add=2048 * 0.021, buffer=6 * 20.45, digital=64 * 0.03, dram=0.0)
    for k, v in expected.items():
        assert r.breakdown[k] == pytest.approx(v, rel=1e-12), k
    assert r.energy_pj == pytest.approx(4921.804, rel=1e-12)
    assert r.latency_ns == pytest.approx(801.0)  # 8 slices x 100 ns + 1 ns of bias adds
    assert r.crossbars == 2 and r.fits
    assert r.area_mm2 == pytest.approx(2 * 0.0002 / 8 + 2 * (0.0096 / 8 + 0.00024 / 4) + 256 * 0.00017 / 1024)


def test_mapping_formulas():
    cfg = PIMConfig(xbar_size=128, cell_bits=2, weight_bits=8, act_bits=6, dac_bits=2)
    m = map_layer(300, 100, cfg)
    assert (m.k, m.rows, m.cols, m.crossbars, m.slices) == (4, 3, 4, 12, 3)
    m = map_layer(64, 64, PIMConfig(xbar_size=64, cell_bits=4, weight_bits=6, dac_bits=2, cols_per_adc=64))
    assert (m.k, m.rows, m.cols, m.slices) == (2, 1, 2, 4)


def test_token_layers_apply_the_crossbar_once_per_column():
    one, many = pim_cost(fc_costs(reps=1)), pim_cost(fc_costs(reps=16))
    assert many.crossbars == one.crossbars
    for k in ("adc", "dac", "crossbar", "shift_add", "buffer"):
        assert many.breakdown[k] == pytest.approx(16 * one.breakdown[k])


def test_replication_trades_crossbars_for_latency_of_repeated_layers():
    """A layer applied 16 times per sample with r weight copies: 16/r sequential rounds on
    r x the crossbars, same energy; copies never exceed the repetitions."""
    base = pim_cost(fc_costs(reps=16))
    for r in (2, 4, 16):
        rep = pim_cost(fc_costs(reps=16), PIMConfig(replication=r))
        assert rep.crossbars == r * base.crossbars
        assert rep.energy_pj == pytest.approx(base.energy_pj)
        assert rep.latency_ns == pytest.approx(16 * 800 / r + 16)  # 16/r rounds of 8 slices x 100 ns; 16 x 64 bias adds stay digital (16 ns)
        assert rep.area_mm2 == pytest.approx(r * base.area_mm2)
    once = pim_cost(fc_costs(reps=1), PIMConfig(replication=16))
    assert once.crossbars == pim_cost(fc_costs(reps=1)).crossbars  # nothing to replicate
    with pytest.raises(ConfigError, match=r"PIM config: key 'replication': must be one of \[1, 2, 4, 8, 16\] \(got 3\)"):
        PIMConfig.from_dict({"replication": 3})


def test_adc_energy_rule_stays_in_the_design_band():
    c = DEFAULT_CONSTANTS
    assert c.adc_pj(8) == pytest.approx(1.67)
    assert 0.8 <= c.adc_pj(4) < c.adc_pj(6) < c.adc_pj(8) < c.adc_pj(10) <= 2.41
    assert all(row[3] for row in c.table())  # every constant names its source


def test_lower_precision_costs_less_energy():
    base = pim_cost(fc_costs(), PIMConfig()).energy_pj
    assert pim_cost(fc_costs(), PIMConfig(act_bits=4)).energy_pj < base
    assert pim_cost(fc_costs(), PIMConfig(adc_bits=5)).energy_pj < base
    assert pim_cost(fc_costs(), PIMConfig(weight_bits=4)).energy_pj < base


def test_crossbar_budget():
    costs = fc_costs(1024, 1024)  # k=4: R=8, C=32 -> 256 crossbars
    assert pim_cost(costs, PIMConfig(crossbar_budget=256)).fits
    small = pim_cost(costs, PIMConfig(crossbar_budget=255))
    assert small.crossbars == 256 and not small.fits
    assert pim_cost(costs, PIMConfig(xbar_size=64, cols_per_adc=64)).crossbars == 16 * 64


def test_critical_path_hand_made_graph():
    # block 0: dense branch a (10 ns) -> b (5 ns) in parallel with sparse branch c (30 ns); out d (1 ns)
    # block 1: e (4 ns) reads d; f (2 ns) reads the raw input only; out g (1 ns) waits for e and f
    g = CostGraph()
    for name, ns, after in [("a", 10, ()), ("b", 5, ("a",)), ("c", 30, ()), ("d", 1, ("b", "c")), ("e", 4, ("d",)), ("f", 2, ()), ("g", 1, ("e", "f"))]:
        g.digital(name, 0, after, elementwise=ns * DEFAULT_CONSTANTS.digital_lanes)
    costs = g.costs(2)
    assert pim_cost(costs).latency_ns == pytest.approx(30 + 1 + 4 + 1)
    assert pim_cost(costs, parallel=False).latency_ns == pytest.approx(10 + 5 + 30 + 1 + 4 + 2 + 1)
    with pytest.raises(ValueError, match="depends on"):
        critical_path(list(reversed(costs.layers)), {l.name: 1.0 for l in costs.layers})


def test_architecture_graph_overlaps_independent_blocks():
    space = get_space("full-tiny", n_blocks=2)
    # raw inputs as wide as block 0's outputs (8 dense, 8 fields), so both graphs do the same work
    m = DatasetMeta(name="t", dense_names=list("abcdefgh"), cat_names=list("stuvwxyz"), vocab_sizes=[3] * 8, rows={})
    b0 = BlockSpec(dense_ops=("fc",), sparse_ops=("efc",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=8, sparse_dim=8)
    chained = Architecture(blocks=(b0, b0.model_copy(update={"dense_inputs": (1,), "sparse_inputs": (1,)})))
    parallel = Architecture(blocks=(b0, b0))  # block 1 reads only raw inputs; both feed the logit
    r_chain, r_par = pim_cost(chained, space=space, meta=m), pim_cost(parallel, space=space, meta=m)
    # same block work; the parallel graph has one more head (block 0 is a leaf there too)
    assert r_chain.energy_pj < r_par.energy_pj < 1.05 * r_chain.energy_pj
    assert r_par.latency_ns < r_chain.latency_ns < pim_cost(chained, space=space, meta=m, parallel=False).latency_ns
    costs = count_costs(chained, space, m)
    assert pim_cost(costs).energy_pj == pytest.approx(r_chain.energy_pj)
    with pytest.raises(ConfigError, match="search space"):
        pim_cost(chained)
    with pytest.raises(ConfigError, match="Architecture or Costs"):
        pim_cost("dlrm")


def test_config_validation():
    assert PIMConfig().lossless_adc_bits == 9  # ISAAC: 128 rows, 2-bit cells, 1-bit DAC
    assert PIMConfig(xbar_size=64, cell_bits=1, cols_per_adc=64).lossless_adc_bits == 7
    assert PIMConfig(xbar_size=256, cell_bits=4, dac_bits=2).lossless_adc_bits == math.ceil(math.log2(256 * 15 * 3 + 1))
    with pytest.raises(ConfigError, match=r"PIM config: key 'xbar_size': must be one of \[64, 128, 256\] \(got 100\)"):
        PIMConfig.from_dict({"xbar_size": 100})
    with pytest.raises(ConfigError, match=r"PIM config: cols_per_adc \(128\) cannot exceed the crossbar size \(64\)"):
        PIMConfig.from_dict({"xbar_size": 64, "cols_per_adc": 128})
    with pytest.raises(ConfigError, match=r"PIM config: unknown key 'adc'; valid keys: xbar_size, cell_bits"):
        PIMConfig.from_dict({"adc": 8})
    with pytest.raises(ConfigError, match=r"hardware.yaml: key 'crossbar_budget': must be positive \(got 0\)"):
        PIMConfig.from_dict({"crossbar_budget": 0}, "hardware.yaml")
    with pytest.raises(ConfigError, match=r"PIM config: key 'xbar_size': must be a number, not \"128\""):  # as every config: was read as 128
        PIMConfig.from_dict({"xbar_size": "128"})


def test_random_and_mutated_configs_are_valid_and_differ_in_one_field():
    rng = np.random.default_rng(0)
    seen = set()
    cfg = random_pim(rng, crossbar_budget=999)
    for _ in range(300):
        new = mutate_pim(cfg, rng)
        changed = [k for k in CHOICES if getattr(new, k) != getattr(cfg, k)]
        assert len(changed) == 1 and new.crossbar_budget == 999
        assert new.cols_per_adc <= new.xbar_size
        seen.add(changed[0])
        cfg = new
    assert seen == set(CHOICES)
    a = [random_pim(np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]


def test_pim_choices_restrict_random_and_mutated_configs():
    ch = pim_choices({"weight_bits": [8], "act_bits": [8], "replication": [4, 16]})
    rng = np.random.default_rng(0)
    cfg, seen = random_pim(rng, choices=ch), set()
    for _ in range(60):
        assert cfg.weight_bits == 8 and cfg.act_bits == 8 and cfg.replication in (4, 16)
        seen.add((cfg.replication, cfg.xbar_size))
        cfg = mutate_pim(cfg, rng, ch)
    assert len(seen) > 3  # the free fields still move
    every_field_fixed = pim_choices({k: [getattr(PIMConfig(), k)] for k in CHOICES})
    assert mutate_pim(PIMConfig(), rng, every_field_fixed) is None
    with pytest.raises(ConfigError, match="non-empty subset"):
        pim_choices({"act_bits": [3]})
    with pytest.raises(ConfigError, match="unknown field"):
        pim_choices({"bits": [8]})


def test_layers_without_weights_or_reads_cost_nothing():
    """On a store without categorical fields the raw tokens' projection is a 0 x t matrix and the
    embedding reads nothing: no crossbar, no energy, no latency (each 0-row projection cost
    8 slices x 100 ns per embedding column on the critical path, and the generically profiled
    subnet, whose projection runs 0 times per sample, divided by zero)."""
    import torch

    from recnas.hardware import module_costs
    from recnas.supernet import Subnet

    g = CostGraph()
    g.linear("empty", 0, 0, 4, reps=8, bias=False)
    g.add(Layer("table", -1, "embedding", reads=0))
    r = pim_cost(g.costs(1))
    assert (r.crossbars, r.energy_pj, r.latency_ns) == (0, 0.0, 0.0)
    space = get_space("full-tiny")
    m = DatasetMeta(name="t", dense_names=["a", "b", "c"], cat_names=[], vocab_sizes=[], rows={})
    arch = Architecture(blocks=tuple(BlockSpec(dense_ops=("fc",), sparse_ops=("efc",), dense_inputs=(i,), sparse_inputs=(0,), dense_dim=8, sparse_dim=4) for i in range(3)))
    analytic = pim_cost(arch, space=space, meta=m)
    for layer in analytic.layers:
        if layer.name == "embedding" or layer.name.endswith("sparse_proj.0"):
            assert layer.crossbars == 0 and layer.latency_ns == 0 and sum(layer.energy_pj.values()) == 0, layer
    measured = pim_cost(module_costs(Subnet(arch, space, m), torch.randn(2, 3), torch.zeros(2, 0, dtype=torch.long)))
    assert measured.crossbars == analytic.crossbars


def test_hand_computed_layers_off_the_default_point():
    """Every scaling rule at once: S = 64, 1-bit cells, 6-bit weights and activations, 2-bit DAC,
    5-bit ADC shared by 16 columns, 4 weight copies; a 100 -> 50 layer with bias applied 8 times,
    a 10-value embedding read and a digital node of 100 MACs + 28 elementwise ops."""
    cfg = PIMConfig(xbar_size=64, cell_bits=1, weight_bits=6, act_bits=6, dac_bits=2, adc_bits=5, cols_per_adc=16, replication=4)
    m = map_layer(100, 50, cfg)
    assert (m.k, m.rows, m.cols, m.crossbars, m.slices) == (6, 2, 5, 10, 3)  # C = ceil(6*50/64)
    g = CostGraph()
    g.linear("fc", 0, 100, 50, reps=8)
    r = pim_cost(g.costs(1), cfg)
    conversions = 3 * 2 * 6 * 50 * 8
    expected = dict(
        adc=conversions * 1.67 * 1.2**-3,
        shift_add=conversions * 0.021,
        dac=3 * 100 * 5 * 8 * 0.417 * 3,  # T N_in C per application, a 2-bit DAC at 3x
        crossbar=3 * 10 * 8 * 30.0 / 4,  # T X per application, (64/128)^2 of 30 pJ
        buffer=150 * 6 / 256 * 8 * 20.45,
        digital=50 * 8 * 0.03 * 6 / 8,  # bias adds at 6 bits
        dram=0.0,
    )
    for k, v in expected.items():
        assert r.breakdown[k] == pytest.approx(v, rel=1e-12), k
    assert r.crossbars == 4 * 10  # 4 copies of 10 crossbars
    # 8 applications in 2 rounds of 3 slices; cycle max(100, 16 x 5/8 / 1.28 = 62.5 ns); 400 bias adds: 7 ns
    assert r.latency_ns == pytest.approx(2 * 3 * 100 + 7)
    per_xbar = 2.5e-5 / 4 + 64 / 16 * (0.0012 / 8 + 6e-5) + 64 * 0.00017 / 1024 * 3
    assert r.area_mm2 == pytest.approx(40 * per_xbar, rel=1e-9)
    assert not pim_cost(g.costs(1), cfg.model_copy(update={"crossbar_budget": 39})).fits
    g = CostGraph()
    g.add(Layer("table", -1, "embedding", reads=10))
    g.digital("gram", 0, ("table",), macs=100, elementwise=28)
    r = pim_cost(g.costs(1), cfg)
    assert r.breakdown["dram"] == pytest.approx(10 * 6 * 30.0)  # stored at weight precision
    assert r.breakdown["digital"] == pytest.approx(100 * (0.2 * (6 / 8) ** 2 + 0.03 * 6 / 8) + 28 * 0.03 * 6 / 8)
    assert r.latency_ns == pytest.approx(50 + 60 / 204.8 + 2)  # row access + 60 bits at 25.6 GB/s, then 128 ops on 64 lanes


def test_rounds_of_a_repeated_layer_round_up_and_an_unused_layer_only_holds_crossbars():
    """3 applications on 2 weight copies take 2 rounds (ceil(3 / 2)), not 1; a layer applied 0
    times per sample keeps its crossbars and spends nothing."""
    r = pim_cost(fc_costs(reps=3), PIMConfig(replication=2))
    assert r.crossbars == 2 * 2
    assert r.latency_ns == pytest.approx(2 * 8 * 100 + 3)  # 2 rounds of 8 slices; 3 x 64 bias adds: 3 ns
    g = CostGraph()
    g.add(Layer("idle", 0, "linear", 128, 64, reps=0))
    idle = pim_cost(g.costs(1), PIMConfig(replication=4))
    assert (idle.crossbars, idle.energy_pj, idle.latency_ns) == (2, 0.0, 0.0)


def test_embedding_reads_at_weight_precision_and_digital_work_at_activation_precision():
    """With 4-bit weights and 8-bit activations: tables are stored (and read from DRAM) at 4
    bits, digital MACs and adds run at 8."""
    cfg = PIMConfig(weight_bits=4, act_bits=8)
    g = CostGraph()
    g.add(Layer("table", -1, "embedding", reads=10))
    g.digital("gram", 0, ("table",), macs=100, elementwise=28)
    r = pim_cost(g.costs(1), cfg)
    assert r.breakdown["dram"] == pytest.approx(10 * 4 * 30.0)
    assert r.breakdown["digital"] == pytest.approx(100 * (0.2 + 0.03) + 28 * 0.03)
    assert r.latency_ns == pytest.approx(50 + 40 / 204.8 + 2)


def test_latency_follows_the_costs_own_parallel_flag():
    """parallel=None: the critical path of a graph whose links are dataflow, the sequential sum of
    one whose links only record an order (module_costs of a generic module)."""
    g = CostGraph()
    for name, ns, after in [("a", 10, ()), ("b", 30, ()), ("c", 1, ("a", "b"))]:
        g.digital(name, 0, after, elementwise=ns * DEFAULT_CONSTANTS.digital_lanes)
    assert pim_cost(g.costs(1)).latency_ns == pytest.approx(31)
    assert pim_cost(g.costs(1, parallel=False)).latency_ns == pytest.approx(41)
    assert pim_cost(g.costs(1, parallel=False), parallel=True).latency_ns == pytest.approx(31)


def test_adc_scaling_rules_and_a_cycle_the_adcs_set():
    """ADC energy x 1.2^(b - 8) and conversion time x b / 8 at every searched resolution; where the
    shared ADCs are slower than the crossbar read (a 0.32 GS/s ADC: 128 columns x 4/8 / 0.32 =
    200 ns > 100 ns) they set the cycle."""
    from recnas.hardware import PIMConstants

    c = DEFAULT_CONSTANTS
    for b in CHOICES["adc_bits"]:
        assert c.adc_pj(b) == pytest.approx(1.67 * 1.2 ** (b - 8), rel=1e-12)
        assert c.adc_ns(b) == pytest.approx(b / 8 / 1.28, rel=1e-12)
    slow = PIMConstants(adc_gsps_8bit=0.32)
    r = pim_cost(fc_costs(), PIMConfig(adc_bits=4, cols_per_adc=128), constants=slow)
    assert r.latency_ns == pytest.approx(8 * 200 + 1)


def test_random_configs_reach_every_valid_crossbar_and_adc_sharing_pair():
    """Uniform over valid design points: an ADC shared by as many columns as the crossbar has
    (ISAAC's own 128 of 128) is valid and drawn; the default budget is one ISAAC chip."""
    rng = np.random.default_rng(0)
    pairs = {(c.xbar_size, c.cols_per_adc) for c in (random_pim(rng) for _ in range(600))}
    assert pairs == {(s, a) for s in CHOICES["xbar_size"] for a in CHOICES["cols_per_adc"] if a <= s}
    assert PIMConfig().crossbar_budget == random_pim(rng).crossbar_budget == 168 * 12 * 8  # docs/hardware.md
