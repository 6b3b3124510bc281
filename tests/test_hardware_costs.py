import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from recnas.data.schema import DatasetMeta
from recnas.errors import ConfigError
from recnas.hardware import count_costs
from recnas.hardware.profile import param_split
from recnas.space import Architecture, BlockSpec, get_space
from recnas.space.samplers import random_architecture
from recnas.supernet import Subnet
from tests.conftest import TINY_SPACES, tiny_space


def meta(n_dense=3, vocab=(4, 5, 6, 7, 8)):
    return DatasetMeta(name="t", dense_names=[f"d{i}" for i in range(n_dense)], cat_names=[f"c{i}" for i in range(len(vocab))], vocab_sizes=list(vocab), rows={})


def batch(m, b=2):
    g = torch.Generator().manual_seed(0)
    sparse = torch.stack([torch.randint(0, v, (b,), generator=g) for v in m.vocab_sizes], 1)
    return torch.randn(b, m.n_dense, generator=g), sparse


def profiler_flops(net, m, b=2):
    dense, sparse = batch(m, b)
    # under no_grad its module tracker fails for n_dense=0; the math attention kernel is the one
    # whose matmuls the counter sees (it has no formula for the fused CPU kernel)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(dense, sparse)
    return counter.get_total_flops() / b


@pytest.mark.parametrize("space_name", TINY_SPACES + ["cin-tiny", "cin-nosplit-tiny"])
@pytest.mark.parametrize("n_dense", [3, 0])
def test_params_and_flops_match_subnet_and_profiler(space_name, n_dense):
    space, m = tiny_space(space_name), meta(n_dense)
    rng = np.random.default_rng(1)
    for k in range(6):
        arch = random_architecture(rng, space, any_ops=k % 2 == 1)
        costs = count_costs(arch, space, m)
        net = Subnet(arch, space, m)
        assert (costs.dense_params, costs.embedding_params) == param_split(net)
        assert costs.params == sum(p.numel() for p in net.parameters())
        cin = 0 if net.cin_head is None else param_split(net.cin_head)[0]  # its id weights are embedding params
        head = sum(arch.blocks[i].dense_dim + 1 for i in arch.dense_leaves()) + cin
        assert sum(b.params for b in costs.blocks) + costs.embedding_params + head == costs.params
        assert profiler_flops(net, m) == costs.flops
        cin_flops = sum(2 * l.macs for l in costs.layers if l.name.startswith("cin_head"))
        assert (cin_flops > 0) == bool(space.cin_head)
        assert costs.flops == sum(b.flops for b in costs.blocks) + sum(2 * arch.blocks[i].dense_dim for i in arch.dense_leaves()) + cin_flops


def test_attention_score_and_value_products_are_counted():
    space, m = get_space("full-tiny"), meta()

    def arch(op):
        return Architecture(blocks=tuple(BlockSpec(dense_ops=("fc",), sparse_ops=(op,), dense_inputs=(i,), sparse_inputs=(i,), dense_dim=8, sparse_dim=4) for i in range(3)))

    att, efc = count_costs(arch("attention"), space, m), count_costs(arch("efc"), space, m)
    t, e = 4, space.emb_dim
    qkv_proj_ffn = 2 * t * (3 * e * e + e * e + 2 * e * 2 * e)  # per-token linears of the layer
    efc_linear = 2 * e * t * t
    assert att.flops - efc.flops == 3 * (2 * (2 * t * t * e) + qkv_proj_ffn - efc_linear)  # QK^T and AV per block
    assert profiler_flops(Subnet(arch("attention"), space, m), m) == att.flops


def test_default_size_architecture_counts_without_forward():
    space = get_space("full")
    m = meta(13, tuple([50] * 26))
    arch = random_architecture(np.random.default_rng(7), space)
    costs = count_costs(arch, space, m)
    net = Subnet(arch, space, m)  # built, never run
    assert (costs.dense_params, costs.embedding_params) == param_split(net)
    assert costs.embedding_params == 26 * 50 * 16


def test_mixed_embedding_widths_count_tables_and_projections():
    space, m = get_space("small-tiny"), meta()
    arch = random_architecture(np.random.default_rng(2), space).model_copy(update={"emb_dims": (2, 8, 4, 4, 3)})
    costs = count_costs(arch, space, m)
    net = Subnet(arch, space, m)
    assert (costs.dense_params, costs.embedding_params) == param_split(net)
    assert costs.embedding_params == 4 * 2 + 5 * 8 + 6 * 4 + 7 * 4 + 8 * 3
    assert [l.reads for l in costs.layers if l.kind == "embedding"] == [2 + 8 + 4 + 4 + 3]  # each field's own width
    assert profiler_flops(net, m) == costs.flops


# One block, meta: 3 dense features, 2 fields (vocab 4 + 5), emb 8; d = 8, t = 4.
# fc/efc: embedding 72 | dense_proj 3*8 + block bias 8 | token proj 2*4 | fc 8*8+8 | efc 4*4+4
#         | sparse_to_dense 4*8*8+8 | dense_to_sparse 8*8+8 | head 8+1 -> 477 dense
#   MACs: 24 + token proj 2*4*8=64 + fc 64 + efc 4*4*8=128 + s2d 256 + d2s 64 + head 8 = 608
# gating/dot: gating 72 replaces fc; dot.dense_token 8*8+8, dot.out (5*4/2=10)*8+8 replace efc
#   MACs: 24 + 64 + 64 + dense_token 64 + Gram 5*5*8=200 + out 80 + 256 + 64 + 8 = 824
# cross/dot: cross (W h + b) 72 params, 64 MACs, as fc and gating. sum: no weights, no MACs.
# attention (2 heads of 4): qkv 8*24+24, proj 8*8+8, ffn 8*16+16 + 16*8+8, two LayerNorms 2*8 each
#   = 600 params; MACs per token 3*64 + 64 + 128 + 128 (x 4 tokens = 2048) + QK^T and AV 2*4*4*8 = 2304.
# Every operator at once (any-path) adds them all up.
# Common part (bias, projections, mergers, head): 385 params, 416 MACs.
@pytest.mark.parametrize("dense_ops,sparse_ops,dense_params,macs", [
    (("fc",), ("efc",), 477, 608),
    (("gating",), ("dot",), 24 + 8 + 8 + 72 + 72 + 88 + 264 + 72 + 9, 824),
    (("cross",), ("dot",), 385 + 72 + 160, 416 + 64 + 344),
    (("sum",), ("attention",), 385 + 600, 416 + 2304),
    (("cross", "fc", "gating", "sum"), ("attention", "dot", "efc"), 385 + 3 * 72 + 600 + 160 + 20, 416 + 3 * 64 + 2304 + 344 + 128),
])
def test_hand_counted_block(dense_ops, sparse_ops, dense_params, macs):
    space, m = tiny_space("every-op-tiny", n_blocks=1), meta(3, (4, 5))
    arch = Architecture(blocks=(BlockSpec(dense_ops=dense_ops, sparse_ops=sparse_ops, dense_inputs=(0,), sparse_inputs=(0,), dense_dim=8, sparse_dim=4),))
    costs = count_costs(arch, space, m)
    assert costs.embedding_params == 9 * 8
    assert costs.dense_params == dense_params
    assert costs.flops == 2 * macs
    net = Subnet(arch, space, m)
    assert costs.dense_params + costs.embedding_params == sum(p.numel() for p in net.parameters())
    assert profiler_flops(net, m) == costs.flops


# Elementwise work of the same block (module docstring: bias adds, input sums, activations,
# gating products, norms 5 per element, softmax 3 per score); d = 8, t = 4, e = 8.
# Common part: block bias 8 (one dense input), sparse_to_dense bias 8, dense_to_sparse bias e = 8,
# the block's output merge d + t e = 40 (+ d per extra dense contribution), head bias 1 -> 65.
# fc: bias + ReLU 16; gating: bias + sigmoid 16 + product 8; cross: bias 8 + h * (.) + h 16;
# efc: bias t per column 4 * 8 = 32; dot: dense_token bias 8 + out bias 8 (+ 8 in the merge);
# attention, 2 heads over 4 tokens: qkv bias 24 * 4, scores softmax (3 + 1 scale) * 2 * 4 * 4,
# proj bias 8 * 4, two LayerNorms + residual (1 + 5) * 4 * 8 each, ffn1 bias 16 * 4 + ReLU 16 * 4,
# ffn2 bias 8 * 4 -> 800. Several operators: summing n outputs, (n - 1) d or (n - 1) t e.
@pytest.mark.parametrize("dense_ops,sparse_ops,elementwise", [
    (("fc",), ("efc",), 65 + 16 + 32),
    (("gating",), ("dot",), 65 + 24 + 16 + 8),
    (("cross",), ("dot",), 65 + 24 + 16 + 8),
    (("sum",), ("attention",), 65 + 800),
    (("cross", "fc", "gating", "sum"), ("attention", "dot", "efc"), 65 + 24 + 16 + 24 + 3 * 8 + 800 + 16 + 8 + 32 + 2 * 32),
])
def test_hand_counted_elementwise_ops_and_embedding_reads(dense_ops, sparse_ops, elementwise):
    space, m = tiny_space("every-op-tiny", n_blocks=1), meta(3, (4, 5))
    arch = Architecture(blocks=(BlockSpec(dense_ops=dense_ops, sparse_ops=sparse_ops, dense_inputs=(0,), sparse_inputs=(0,), dense_dim=8, sparse_dim=4),))
    costs = count_costs(arch, space, m)
    assert costs.elementwise_ops == elementwise
    assert [l.reads for l in costs.layers if l.kind == "embedding"] == [2 * 8]  # 2 fields x e values
    if dense_ops == ("fc",):  # without numeric features: no dense projection, no bias add to count
        assert count_costs(arch, space, meta(0, (4, 5))).elementwise_ops == elementwise - 8


def test_hand_drawn_dataflow_of_a_block():
    """The `after` links the critical-path latency follows: the block's output waits for both
    mergers; attention's scores wait for the q, k, v projection."""
    space, m = tiny_space("every-op-tiny", n_blocks=1), meta(3, (4, 5))
    arch = Architecture(blocks=(BlockSpec(dense_ops=("fc",), sparse_ops=("attention",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=8, sparse_dim=4),))
    after = {l.name: l.after for l in count_costs(arch, space, m).layers}
    p = "block0."
    assert after == {
        "embedding": (), p + "dense_proj.0": (), p + "dense_in": (p + "dense_proj.0",),
        p + "sparse_proj.0": ("embedding",), p + "sparse_in": (p + "sparse_proj.0",),
        p + "fc": (p + "dense_in",), p + "dense_ops": (p + "fc",),
        p + "attn.qkv": (p + "sparse_in",), p + "attn.sdpa": (p + "attn.qkv",), p + "attn.proj": (p + "attn.sdpa",),
        p + "attn.norm1": (p + "sparse_in", p + "attn.proj"), p + "attn.ffn1": (p + "attn.norm1",), p + "attn.ffn2": (p + "attn.ffn1",),
        p + "attn.norm2": (p + "attn.norm1", p + "attn.ffn2"), p + "sparse_ops": (p + "attn.norm2",),
        p + "sparse_to_dense": (p + "sparse_ops",), p + "dense_to_sparse": (p + "dense_ops",),
        p + "out": (p + "dense_ops", p + "sparse_ops", p + "sparse_to_dense", p + "dense_to_sparse"),
        "head0": (p + "out",), "logit": ("head0",),
    }


@pytest.mark.parametrize("d", [8, 16, 32])
@pytest.mark.parametrize("t", [4, 8])
def test_costs_follow_the_subnets_widths(d, t):
    """One fc/efc block at every width of the space, counted at the subnet's d and t (not the
    space's maxima 32 and 8): the closed form of the hand count above. The fc layer grows as
    d^2, EFC as t^2 e, the sparse-to-dense merger as t e d."""
    space, m, e = get_space("full-tiny", n_blocks=1), meta(3, (4, 5)), 8
    arch = Architecture(blocks=(BlockSpec(dense_ops=("fc",), sparse_ops=("efc",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=d, sparse_dim=t),))
    costs = count_costs(arch, space, m)
    params = 3 * d + d + 2 * t + (d * d + d) + (t * t + t) + (t * e * d + d) + (d * e + e) + (d + 1)
    macs = 3 * d + 2 * t * e + d * d + t * t * e + t * e * d + d * e + d
    assert (costs.dense_params, costs.flops) == (params, 2 * macs)
    assert params + 9 * e == sum(p.numel() for p in Subnet(arch, space, m).parameters())


def test_hand_counted_multi_input_blocks():
    """Block 1 reads the raw inputs and block 0's outputs (d 16, t 8): one projection per input,
    summed; block 0 stays a head (its dense output is read, so it is not a leaf)."""
    space, m, e = get_space("full-tiny", n_blocks=2), meta(3, (4, 5)), 8
    b0 = BlockSpec(dense_ops=("fc",), sparse_ops=("efc",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=16, sparse_dim=8)
    b1 = BlockSpec(dense_ops=("fc",), sparse_ops=("efc",), dense_inputs=(0, 1), sparse_inputs=(0, 1), dense_dim=8, sparse_dim=4)
    costs = count_costs(Architecture(blocks=(b0, b1)), space, m)
    # block 1: dense proj 3*8 + 16*8, bias 8, token proj 2*4 + 8*4, fc 72, efc 20, s2d 264, d2s 72
    p1, macs1 = 24 + 128 + 8 + 8 + 32 + 72 + 20 + 264 + 72, 24 + 128 + (2 * 4 + 8 * 4) * e + 64 + 128 + 256 + 64
    assert (costs.blocks[1].params, costs.blocks[1].flops) == (p1, 2 * macs1)
    # block 0 at d 16, t 8 (the closed form above); one head, on block 1 (8 + 1)
    p0 = 48 + 16 + 16 + 272 + 72 + (8 * 8 * 16 + 16) + (16 * 8 + 8)
    assert costs.blocks[0].params == p0 and costs.dense_params == p0 + p1 + 9
    assert costs.dense_params + costs.embedding_params == sum(p.numel() for p in Subnet(Architecture(blocks=(b0, b1)), space, m).parameters())


# CIN [4, 3] over 2 categorical + 3 numeric fields of width 8: the numeric vectors (3*8 params),
# layer 0 conv 5*5 -> 4 (104 params, 25*4*8 MACs); with the split, half (2 maps) on to layer 1
# conv 2*5 -> 3 (33 params, 10*3*8 MACs), output 2 + 3 pooled maps -> 1 (6 params, 5 MACs);
# without it, all 4 maps on to layer 1 conv 4*5 -> 3 (63 params, 20*3*8 MACs), output 4 + 3
# pooled maps -> 1 (8 params, 7 MACs). The first-order term: a weight per id (4 + 5, embedding
# params), numeric 3 -> 1 (3 MACs), a bias.
@pytest.mark.parametrize("split, dense_params, macs", [
    (True, 24 + 104 + 33 + 6 + 3 + 1, 25 * 4 * 8 + 10 * 3 * 8 + 5 + 3),
    (False, 24 + 104 + 63 + 8 + 3 + 1, 25 * 4 * 8 + 20 * 3 * 8 + 7 + 3),
])
def test_hand_counted_cin_head(split, dense_params, macs):
    m = meta(3, (4, 5))
    arch = Architecture(blocks=(BlockSpec(dense_ops=("fc",), sparse_ops=("efc",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=8, sparse_dim=4),))
    plain, cin = (count_costs(arch, get_space("full-tiny", n_blocks=1, **extra), m) for extra in ({}, {"cin_head": (4, 3), "cin_head_split": split}))
    assert cin.dense_params - plain.dense_params == dense_params
    assert cin.flops - plain.flops == 2 * macs
    assert cin.embedding_params - plain.embedding_params == 4 + 5
    net = Subnet(arch, get_space("full-tiny", n_blocks=1, cin_head=(4, 3), cin_head_split=split), m)
    assert cin.dense_params + cin.embedding_params == sum(p.numel() for p in net.parameters())


def test_invalid_architecture_is_a_config_error():
    space, m = get_space("small-tiny"), meta()
    arch = random_architecture(np.random.default_rng(0), space)
    bad = arch.model_copy(update={"blocks": (arch.blocks[0].model_copy(update={"dense_dim": 7}),) + arch.blocks[1:]})
    with pytest.raises(ConfigError, match="dense_dim 7"):
        count_costs(bad, space, m)
