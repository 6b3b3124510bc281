import numpy as np
import pytest
import torch

from recnas.data.schema import DatasetMeta
from recnas.errors import ConfigError
from recnas.hardware import PIMConfig, fake_quant, quantized
from recnas.space import get_space
from recnas.space.samplers import random_architecture
from recnas.supernet import Subnet, Supernet


def test_fake_quant_levels_error_and_straight_through_gradient():
    x = torch.linspace(-3, 2, 101, requires_grad=True)
    q = fake_quant(x, 4)
    step = 3 / 7  # max|x| / (2^3 - 1)
    assert len(torch.unique(q.detach())) <= 15
    assert (q - x).abs().max() <= step / 2 + 1e-6
    assert torch.allclose(q.detach() / step, torch.round(q.detach() / step), atol=1e-4)
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert torch.equal(fake_quant(torch.zeros(5), 4), torch.zeros(5))
    assert (fake_quant(x, 8) - x).abs().max() < (q - x).abs().max()
    with pytest.raises(ConfigError, match="at least 2 bits"):
        fake_quant(x, 1)


def test_fake_quant_uses_every_level_on_non_negative_inputs():
    """After a ReLU nothing is negative: 4 bits give 15 steps over [0, max], twice the resolution."""
    x = torch.linspace(0, 3, 301)
    q = fake_quant(x, 4)
    step = 3 / 15
    assert q.min() == 0 and len(torch.unique(q)) == 16
    assert (q - x).abs().max() <= step / 2 + 1e-6
    signed = fake_quant(torch.cat([x, -x[-1:]]), 4)[:-1]  # one negative value: back to 7 steps a side
    assert (signed - x).abs().max() > step / 2 + 1e-6
    assert fake_quant(x.to(torch.bfloat16), 4).dtype == torch.bfloat16


def _net_and_batch(seed=0):
    torch.manual_seed(seed)
    space = get_space("full-tiny")
    m = DatasetMeta(name="t", dense_names=["a", "b", "c"], cat_names=list("wxyz"), vocab_sizes=[5, 6, 7, 8], rows={})
    net = Subnet(random_architecture(np.random.default_rng(seed), space), space, m)
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, v, (64,), generator=g) for v in m.vocab_sizes], 1)
    return net, torch.randn(64, 3, generator=g), sparse


def test_quantized_scoring_changes_outputs_with_precision_and_restores_weights():
    net, dense, sparse = _net_and_batch()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        ref = net(dense, sparse)
        errs = {}
        for bits in (8, 4):
            cfg = PIMConfig(weight_bits=bits, act_bits=bits, adc_bits=bits)
            with quantized(net, cfg):
                out = net(dense, sparse)
            errs[bits] = ((out - ref).norm() / ref.norm()).item()
        after = net(dense, sparse)
        with quantized(net, None) as same:  # no hardware: full precision, nothing hooked
            assert same is net and torch.equal(net(dense, sparse), ref)
    assert 0 < errs[8] < 0.1 and errs[4] > 3 * errs[8]
    assert torch.equal(after, ref)  # hooks removed
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_adc_outputs_quantised_only_below_lossless_bits():
    net, dense, sparse = _net_and_batch(1)
    lossless = PIMConfig(xbar_size=64, cell_bits=1, cols_per_adc=64, adc_bits=7)  # needs 7 bits: exact
    lossy = PIMConfig(xbar_size=64, cell_bits=1, cols_per_adc=64, adc_bits=4)
    wide = PIMConfig(xbar_size=64, cell_bits=1, cols_per_adc=64, adc_bits=8)
    with torch.no_grad():
        outs = {}
        for name, cfg in (("lossless", lossless), ("lossy", lossy), ("wide", wide)):
            with quantized(net, cfg):
                outs[name] = net(dense, sparse)
    assert torch.equal(outs["lossless"], outs["wide"])  # ADC bits above what accumulation needs change nothing
    assert not torch.allclose(outs["lossy"], outs["lossless"])


def test_weights_restored_after_an_error_and_on_a_supernet():
    net, dense, sparse = _net_and_batch(2)
    before = [p.clone() for p in net.parameters()]
    with pytest.raises(RuntimeError):
        with quantized(net, PIMConfig(weight_bits=4)):
            raise RuntimeError("boom")
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    sup = Supernet(net.space, net.meta)
    w = sup.heads['0'].weight.clone()
    with quantized(sup, PIMConfig(weight_bits=4)):
        assert not torch.equal(sup.heads['0'].weight, w)
    assert torch.equal(sup.heads['0'].weight, w)


def test_each_quantiser_uses_its_own_bit_width_on_a_hand_made_layer():
    """quantized: a crossbar layer's input is rounded to act_bits, its weights to weight_bits and
    (below lossless_adc_bits) its output to adc_bits, each with its own width: one Linear
    checked against fake_quant by hand with three different widths."""
    lin = torch.nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.9, -0.3, 0.2, 0.05], [0.1, 0.7, -0.6, 0.4], [-0.8, 0.25, 0.33, 0.6]]))
    x = torch.tensor([[0.13, -0.71, 0.52, 0.94], [0.3, 0.2, -0.9, 0.41]])
    w = lin.weight.detach().clone()
    exact = PIMConfig(xbar_size=64, cell_bits=1, cols_per_adc=64, weight_bits=8, act_bits=4, adc_bits=7)  # 7 = lossless: no output rounding
    lossy = PIMConfig(xbar_size=64, cell_bits=1, cols_per_adc=64, weight_bits=8, act_bits=4, adc_bits=6)
    with torch.no_grad():
        with quantized(lin, exact):
            assert torch.equal(lin.weight, fake_quant(w, 8))
            got = lin(x)
        want = fake_quant(x, 4) @ fake_quant(w, 8).T
        assert torch.allclose(got, want, atol=1e-6)
        with quantized(lin, lossy):
            got = lin(x)
        assert torch.allclose(got, fake_quant(want, 6), atol=1e-6) and not torch.allclose(got, want, atol=1e-3)
    assert torch.equal(lin.weight, w)


def test_fake_quant_passes_the_finite_values_of_a_tensor_holding_inf_through():
    """A tensor holding inf has an infinite scale, so no level is finite: fake_quant keeps its
    finite values as they are instead of making them NaN (the inf itself comes out non-finite:
    the straight-through x + (q - x) is inf - inf there)."""
    x = torch.tensor([1.0, float("inf"), -2.0])
    out = fake_quant(x, 4)
    assert torch.equal(out[[0, 2]], x[[0, 2]]) and not torch.isfinite(out[1])
