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
