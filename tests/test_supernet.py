import json
import re

import numpy as np
import pytest
import torch
import yaml

from recnas.data.schema import DatasetMeta
from recnas.errors import ConfigError
from recnas.space import Architecture, BlockSpec, get_space, resolve_space
from recnas.space.samplers import ArchSampler, random_architecture
from recnas.supernet import Subnet, Supernet, inherit_weights
from tests.conftest import TINY_SPACES, tiny_space


def meta(n_dense=3, fields=5):
    return DatasetMeta(name="t", dense_names=[f"d{i}" for i in range(n_dense)], cat_names=[f"c{i}" for i in range(fields)], vocab_sizes=[4 + i for i in range(fields)], rows={})


def batch(m, b=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, v, (b,), generator=g) for v in m.vocab_sizes], 1)
    return torch.randn(b, m.n_dense, generator=g), sparse


@pytest.mark.parametrize("space_name", TINY_SPACES)
@pytest.mark.parametrize("n_dense", [3, 0])
def test_random_subnets_run_and_inherit_exactly(space_name, n_dense):
    space, m = tiny_space(space_name), meta(n_dense)
    net = Supernet(space, m)
    dense, sparse = batch(m)
    rng = np.random.default_rng(0)
    for strategy in ("single-op-any-conn", "any-path", "single-path"):
        arch = ArchSampler(space, strategy, seed=1).sample()
        out = net(dense, sparse, arch)
        assert out.shape == (16,) and torch.isfinite(out).all()
        out.sum().backward()
        sub = Subnet.from_architecture(arch, space, m, supernet=net)
        torch.testing.assert_close(sub(dense, sparse), out, rtol=1e-5, atol=1e-6)
        assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in net.parameters())
    for _ in range(5):
        arch = random_architecture(rng, space)
        torch.testing.assert_close(Subnet.from_architecture(arch, space, m, net)(dense, sparse), net(dense, sparse, arch))


@pytest.mark.parametrize("space_name", TINY_SPACES)
def test_subnets_inherit_exactly_from_a_supernet_moved_off_its_start(space_name):
    """A fresh supernet's projections of earlier blocks' tokens are zero (recnas/supernet/block.py),
    so at its start a wrong slice of them inherits zeros as the right one does and the outputs
    still agree. With every weight moved (as training moves them) the supernet's sliced path,
    its masked path and the inherited Subnet must still compute one function, for every sampler
    and for paths with fewer tokens than fields (the raw projection's fold; 7 fields here)."""
    space, m = tiny_space(space_name), meta(fields=7)
    net = Supernet(space, m).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    net.eval()
    dense, sparse = batch(m)
    dense = dense.double()
    for strategy in ("single-op-any-conn", "any-path", "single-path"):
        sampler = ArchSampler(space, strategy, seed=5)
        for _ in range(6):
            arch = sampler.sample()
            with torch.no_grad():
                out = net(dense, sparse, arch)
                torch.testing.assert_close(net(dense, sparse, net.path_masks(arch)), out, rtol=1e-9, atol=1e-10)
                sub = Subnet(arch, space, m).double().eval()
                inherit_weights(sub, net)  # into a double model: a float32 one would round the weights
                torch.testing.assert_close(sub(dense, sparse), out, rtol=1e-9, atol=1e-10)


def test_every_operator_gets_gradient_when_chosen():
    space, m = tiny_space("every-op-tiny"), meta()
    net = Supernet(space, m)
    dense, sparse = batch(m)
    for dop in space.dense_ops:
        for sop in space.sparse_ops:
            net.zero_grad()
            blocks = tuple(BlockSpec(dense_ops=(dop,), sparse_ops=(sop,), dense_inputs=tuple(range(i + 1)), sparse_inputs=(0, i), dense_dim=16, sparse_dim=8) for i in range(space.n_blocks))
            net(dense, sparse, Architecture(blocks=blocks)).sum().backward()
            blk = net.blocks[1]
            if dop != "sum":
                assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in blk.dense_ops[dop].parameters())
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in blk.sparse_ops[sop].parameters())
            other = [o for o in space.sparse_ops if o != sop]
            assert all(p.grad is None or p.grad.abs().sum() == 0 for o in other for p in blk.sparse_ops[o].parameters())


def test_operator_balancing_parameters_grow_linearly_with_inputs():
    space, m = get_space("full-tiny", n_blocks=5), meta()
    counts = []
    for k in range(1, 5):
        blocks = [BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=16, sparse_dim=8) for _ in range(4)]
        blocks.append(BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=tuple(range(1, k + 1)), sparse_inputs=tuple(range(1, k + 1)), dense_dim=16, sparse_dim=8))
        sub = Subnet(Architecture(blocks=tuple(blocks)), space, m)
        counts.append(sum(p.numel() for p in sub.blocks[4].parameters()))
    steps = np.diff(counts)
    assert (steps > 0).all() and len(set(steps.tolist())) == 1  # constant increment per input


def test_architecture_validation_and_hash():
    space = get_space("small-tiny")
    arch = random_architecture(np.random.default_rng(3), space)
    assert Architecture.model_validate_json(arch.to_json()).hash == arch.hash
    shuffled = arch.model_copy(update={"blocks": tuple(b.model_copy(update={"dense_inputs": tuple(reversed(b.dense_inputs))}) for b in arch.blocks)})
    assert shuffled.hash == arch.hash
    bad_op = arch.model_copy(update={"blocks": (arch.blocks[0].model_copy(update={"sparse_ops": ("attention",)}),) + arch.blocks[1:]})
    with pytest.raises(ConfigError, match="sparse op 'attention' not in space"):
        bad_op.validate_for(space)
    bad_in = arch.model_copy(update={"blocks": (arch.blocks[0].model_copy(update={"dense_inputs": (1,)}),) + arch.blocks[1:]})
    with pytest.raises(ConfigError, match="out of range"):
        Subnet(bad_in, space, meta())
    with pytest.raises(ConfigError, match="dense_dim 7"):
        arch.model_copy(update={"blocks": (arch.blocks[0].model_copy(update={"dense_dim": 7}),) + arch.blocks[1:]}).validate_for(space)


def test_architecture_file_errors(tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text('{"blocks": [{"dense_ops": ["fc"]}]}')
    with pytest.raises(ConfigError, match="invalid architecture"):
        Architecture.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        Architecture.load(tmp_path / "missing.json")


def test_unknown_space_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown search space"):
        get_space("huge")
    with pytest.raises(ConfigError, match="dense_ops"):
        get_space("full", dense_ops=("conv",))


def test_resolve_space_takes_a_preset_or_a_space_file(tmp_path):
    assert resolve_space("small-tiny") == get_space("small-tiny")
    space = get_space("full", n_blocks=3, dense_ops=("fc", "cross"), emb_dim=32)
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump(space.model_dump(mode="json")))
    assert resolve_space(f) == space
    f.write_text("name: full\nn_blokcs: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'n_blokcs'"):
        resolve_space(f)
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_space(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown search space 'huge'.*space file"):
        resolve_space("huge")
    with pytest.raises(ConfigError, match="unknown search space ''.*space file"):  # `--space ""` was read as the folder "."
        resolve_space("")


def test_a_search_run_folder_as_space_points_to_its_space_file(tmp_path):
    """`--space runs/search` (the run, not its space.yaml) was "cannot read config file (Is a
    directory)", naming neither the option nor the file to give."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "space.yaml").write_text(yaml.safe_dump(get_space("small-tiny").model_dump(mode="json")))
    with pytest.raises(ConfigError, match=re.escape(f"search space '{tmp_path / 'run'}' is a folder; give its space file, {tmp_path / 'run' / 'space.yaml'}") + "$"):
        resolve_space(tmp_path / "run")
    with pytest.raises(ConfigError, match="is a folder; give a space file .* or one of full, small"):
        resolve_space(tmp_path)


@pytest.mark.parametrize("key, given, shown", [
    ("dense_dims", [8, 16, 8], "8"),  # was accepted as [8, 16]
    ("sparse_dims", [4, 4], "4"),
    ("dense_ops", ["fc", "sum", "fc", "sum"], "fc, sum"),  # was kept twice
    ("sparse_ops", ["dot", "dot"], "dot"),
])
def test_a_space_file_listing_a_choice_twice_is_refused(tmp_path, key, given, shown):
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump({**get_space("full-tiny").model_dump(mode="json"), key: given}))
    with pytest.raises(ConfigError, match=rf"key '{key}': {key} lists {shown} more than once; give each choice once"):
        resolve_space(f)
    f.write_text(yaml.safe_dump({**get_space("full-tiny").model_dump(mode="json"), "dense_dims": [16, 8]}))
    assert resolve_space(f).dense_dims == (8, 16)  # distinct choices in any order load as before


def test_every_dangling_block_feeds_the_logit():
    space, m = get_space("full-tiny"), meta()
    spec = dict(dense_ops=("fc",), sparse_ops=("dot",), sparse_inputs=(0,), dense_dim=8, sparse_dim=4)
    # block 0 is read by nobody's dense input, block 1 reads the raw input, block 2 reads block 1
    arch = Architecture(blocks=(BlockSpec(dense_inputs=(0,), **spec), BlockSpec(dense_inputs=(0,), **spec), BlockSpec(dense_inputs=(2,), **spec)))
    assert arch.dense_leaves() == (0, 2)
    sub = Subnet(arch, space, m)
    assert sorted(sub.heads) == ["0", "2"]
    dense, sparse = batch(m)
    sub(dense, sparse).sum().backward()
    assert sub.blocks[0].dense_ops["fc"].linear.weight.grad.abs().sum() > 0  # block 0 is not dead
    net = Supernet(space, m)
    torch.testing.assert_close(Subnet.from_architecture(arch, space, m, net)(dense, sparse), net(dense, sparse, arch))


def test_embeddings_start_field_fan_uniform_and_raw_tokens_unmixed():
    """NASRec nets start like the reference DLRM (U(+-sqrt(1/n)) per field) and read the raw
    field embeddings through an unmixed token projection (fields folded onto fewer tokens);
    earlier blocks' tokens beside them start at zero."""
    space, m = get_space("full-tiny"), meta(fields=5)
    net = Supernet(space, m)
    emb = net.embedding
    for f, (off, n) in enumerate(zip(emb.offsets.tolist(), emb.vocab_sizes)):
        rows = emb.weight[off : off + n]
        assert rows.abs().max() <= n**-0.5 and rows.abs().max() > 0.3 * n**-0.5, f
    proj = net.blocks[0].sparse_proj["0"].weight  # [max tokens 8, 5 fields]
    torch.testing.assert_close(proj[:5], torch.eye(5))
    assert proj[5:].abs().sum() == 0
    # an earlier block's tokens enter as a no-op, and the gradient reaches their projection
    later = net.blocks[1].sparse_proj["1"].weight
    assert later.abs().sum() == 0
    arch = Architecture(blocks=tuple(BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=(i,), sparse_inputs=(0, i) if i else (0,), dense_dim=8, sparse_dim=8) for i in range(3)))
    dense, sparse = batch(m)
    net(dense, sparse, arch).pow(2).sum().backward()
    assert later.grad is not None and later.grad.abs().sum() > 0
    # without the raw fields beside them there is nothing to swamp: random init as before
    only_earlier = Architecture(blocks=tuple(b.model_copy(update={"sparse_inputs": (i,)}) for i, b in enumerate(arch.blocks)))
    assert Subnet(only_earlier, space, m).blocks[2].sparse_proj["2"].weight.abs().sum() > 0
    # a compact subnet with fewer tokens than fields folds the fields onto the tokens in turn:
    # each field whole in one token (none dropped, none mixed at random)
    arch = ArchSampler(space, seed=0).sample()
    small = Architecture(blocks=tuple(b.model_copy(update={"sparse_dim": 4, "sparse_inputs": (0,)}) for b in arch.blocks))
    w = Subnet(small, space, m).blocks[0].sparse_proj["0"].weight
    folded = torch.tensor([[1.0, 0, 0, 0, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]])
    torch.testing.assert_close(w, folded)
    # the supernet's 4-token path folds its raw projection the same way (it used to take the
    # leading slice, dropping field 4), so the subnet inherits the start it would have alone,
    # and the fifth field's row learns on the 4-token path, on the masked path as on the sliced
    torch.testing.assert_close(Subnet.from_architecture(small, space, m, net).blocks[0].sparse_proj["0"].weight, folded)
    for path in (small, net.path_masks(small)):
        net.zero_grad()
        net(dense, sparse, path).pow(2).sum().backward()
        grad = net.blocks[0].sparse_proj["0"].weight.grad
        assert grad[4].abs().sum() > 0 and grad[5:].abs().sum() == 0


def test_an_architecture_listing_a_choice_twice_computes_what_its_hash_names(tmp_path):
    # a hand-written file: repeats used to be summed twice on the sliced path only
    space, m = tiny_space("full-tiny"), meta()
    net = Supernet(space, m)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    dense, sparse = batch(m)
    blocks = [dict(dense_ops=("fc", "fc"), sparse_ops=("dot", "efc", "dot"), dense_inputs=(0, 0), sparse_inputs=(0,), dense_dim=16, sparse_dim=8)]
    blocks += [dict(dense_ops=("gating",), sparse_ops=("dot",), dense_inputs=(i, 0, i), sparse_inputs=(i, 0, 0), dense_dim=8, sparse_dim=4) for i in (1, 2)]
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"blocks": blocks}))
    arch = Architecture.load(path)
    out = net(dense, sparse, arch)
    torch.testing.assert_close(out, net(dense, sparse, net.path_masks(arch)))
    torch.testing.assert_close(out, Subnet.from_architecture(arch, space, m, net)(dense, sparse))
    assert arch == arch.canonical()
    assert arch.blocks[0].sparse_ops == ("dot", "efc") and arch.blocks[1].sparse_inputs == (0, 1)


def test_a_supernet_refuses_an_architecture_outside_its_space():
    # sliced and masked alike: a foreign architecture used to fail deep in the forward
    # (KeyError 'gating', tuple.index, a tensor-size RuntimeError) or, with a width the space
    # does not list or a negative input index, to run on weights no path of the space uses
    space, m = get_space("small-tiny"), meta()
    net = Supernet(space, m)
    dense, sparse = batch(m)
    good = ArchSampler(space, seed=0).sample()
    b0 = good.blocks[0]
    bad = {
        "dense op 'gating' not in space": b0.model_copy(update={"dense_ops": ("gating",)}),
        r"dense_dim 24 not in \[8, 16, 32\]": b0.model_copy(update={"dense_dim": 24}),
        r"dense inputs \[-1\] out of range": b0.model_copy(update={"dense_inputs": (-1, 0)}),
    }
    for match, block in bad.items():
        arch = good.model_copy(update={"blocks": (block, *good.blocks[1:])})
        for run in (lambda: net(dense, sparse, arch), lambda: net.path_masks(arch)):
            with pytest.raises(ConfigError, match=f"does not fit the supernet's space 'small-tiny': block 0: {match}"):
                run()
    with pytest.raises(ConfigError, match="architecture has 2 blocks, space 'small-tiny' has 3"):
        net(dense, sparse, Architecture(blocks=good.blocks[:2]))
    torch.testing.assert_close(net(dense, sparse, good), net(dense, sparse, net.path_masks(good)))


@pytest.mark.parametrize("space_name", TINY_SPACES)
def test_a_store_without_categorical_fields_builds_without_torch_warnings(space_name):
    """A store of dense features only: every supernet and subnet built for it printed PyTorch's
    `UserWarning: Initializing zero-element tensors is a no-op` (an empty token projection),
    several times per `recnas search`. Nothing is drawn for an empty weight either way, so the
    other weights are the same."""
    import warnings

    space, m = tiny_space(space_name), meta(n_dense=3, fields=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.manual_seed(0)
        net = Supernet(space, m)
        arch = ArchSampler(space, "single-op-any-conn", seed=1).sample()
        sub = Subnet(arch, space, m)
    dense, sparse = torch.randn(16, m.n_dense), torch.zeros(16, 0, dtype=torch.long)
    assert torch.isfinite(net(dense, sparse, arch)).all() and torch.isfinite(sub(dense, sparse)).all()


def test_a_subnet_inherits_only_from_a_supernet_whose_space_it_fits_at_its_emb_dim():
    """`_check_inheritable` (mutation round 4, N09 N10): an architecture its own space allows but
    the supernet's does not (a dense width the supernet never lists, below its widest), or a
    subnet space of another emb_dim, is a ConfigError; both used to copy leading slices silently."""
    m = meta()
    space = get_space("small-tiny")
    arch = ArchSampler(space, seed=0).sample()
    mid = Architecture(blocks=tuple(b.model_copy(update={"dense_dim": 16}) for b in arch.blocks))
    net = Supernet(get_space("small-tiny", dense_dims=(8, 32)), m)
    with pytest.raises(ConfigError, match=r"does not fit the supernet's space 'small-tiny': block 0: dense_dim 16 not in \[8, 32\]"):
        Subnet.from_architecture(mid, space, m, net)
    wide = Supernet(get_space("small-tiny", emb_dim=16), m)
    with pytest.raises(ConfigError, match="cannot inherit from a supernet of emb_dim 16: the subnet's space has emb_dim 8"):
        Subnet.from_architecture(arch, space, m, wide)
    dense, sparse = batch(m)
    same = Supernet(space, m)
    torch.testing.assert_close(Subnet.from_architecture(arch, space, m, same)(dense, sparse), same(dense, sparse, arch))


def test_inherit_weights_refuses_a_supernet_tensor_of_another_rank():
    """A same-named supernet tensor with more (or fewer) axes than the subnet's is a ConfigError
    naming both shapes, not a torch copy error (mutation round 4, N19)."""
    sub = torch.nn.Linear(4, 3)
    for shape in ((3, 4, 1), (3,)):
        sup = torch.nn.Module()
        sup.weight = torch.nn.Parameter(torch.zeros(shape))
        sup.bias = torch.nn.Parameter(torch.zeros(3))
        with pytest.raises(ConfigError, match=re.escape(f"supernet weight 'weight' {shape} cannot hold (3, 4)")):
            inherit_weights(sub, sup)


def test_check_path_use_wants_a_path_for_a_supernet_and_none_for_a_fixed_model():
    """A Supernet needs a path; a Subnet and a baseline refuse one (mutation round 4, N11 N18)."""
    from recnas.baselines import build_baseline
    from recnas.supernet.net import check_path_use

    space, m = get_space("small-tiny"), meta()
    net, sub, base = Supernet(space, m), Subnet(ArchSampler(space, seed=0).sample(), space, m), build_baseline("lr", m)
    check_path_use(net, True, "evaluate", "arch")
    for model in (sub, base):
        check_path_use(model, False, "evaluate", "arch")
        with pytest.raises(ConfigError, match=rf"evaluate: a {type(model).__name__} is one fixed model and takes no arch"):
            check_path_use(model, True, "evaluate", "arch")
    with pytest.raises(ConfigError, match=r"evaluate: a Supernet runs one of its architectures at a time: pass arch \(see --arch\)$"):
        check_path_use(net, False, "evaluate", "arch", "see --arch")


def test_a_compact_subnet_starts_as_its_width_masked_supernet_path():
    """A fresh Subnet with emb_dims starts its compact tables fan-uniform per field, as the full
    table starts (N13), and its projections at the identity (N17), so it computes the zero-padded
    width-w lookups of its own tables (mutation round 4)."""
    space, m = get_space("small-tiny"), meta(fields=5)  # vocab sizes 4..8
    arch = Architecture(blocks=ArchSampler(space, seed=0).sample().blocks, emb_dims=(2, 8, 4, 8, 1))
    torch.manual_seed(0)
    emb = Subnet(arch, space, m).embedding
    for table in emb.tables:
        for off, n in zip(table.offsets.tolist(), table.vocab_sizes):
            rows = table.weight[off : off + n]
            assert rows.abs().max() <= n**-0.5 and rows.abs().max() > 0.3 * n**-0.5
    for proj, w, g in zip(emb.projs, emb.group_widths, emb.groups):
        torch.testing.assert_close(proj.detach(), torch.eye(w, 8).repeat(len(g), 1, 1), rtol=0, atol=0)


def test_a_subnet_refuses_to_inherit_from_a_supernet_of_other_vocabularies():
    """Same field count, one vocabulary size differs: the leading rows would be other ids' rows,
    so it is a ConfigError naming the field (mutation round 4, N25)."""
    space, m = get_space("small-tiny"), meta()
    other = DatasetMeta(name="t", dense_names=list(m.dense_names), cat_names=list(m.cat_names), vocab_sizes=[4, 5, 9, 7, 8], rows={})
    arch = ArchSampler(space, seed=0).sample()
    with pytest.raises(ConfigError, match=r"other data: its data has field 2 \(c2\) with 6 ids, the subnet's with 9"):
        Subnet.from_architecture(arch, space, other, Supernet(space, m))


def test_a_subnet_keeps_the_canonical_form_of_its_architecture():
    """An architecture object with repeated choices (model_copy skips validation) builds the
    subnet of its canonical form, which computes the supernet's path (mutation round 4, N26)."""
    space, m = get_space("full-tiny"), meta()
    arch = ArchSampler(space, seed=2).sample()
    b0 = arch.blocks[0]
    dup = arch.model_copy(update={"blocks": (b0.model_copy(update={"dense_ops": b0.dense_ops * 2, "dense_inputs": b0.dense_inputs * 2}),) + arch.blocks[1:]})
    net = Supernet(space, m)
    sub = Subnet.from_architecture(dup, space, m, net)
    assert sub.arch == dup.canonical() and sub.arch.blocks[0].dense_ops == b0.dense_ops
    dense, sparse = batch(m)
    torch.testing.assert_close(sub(dense, sparse), net(dense, sparse, arch))


def test_a_store_without_categorical_fields_takes_an_architecture_with_no_emb_dims():
    """`emb_dims: []` is the one per-field list a dense-only store has, and validation accepts it;
    the Subnet used to fail building a mixed-width embedding of no fields (`max() arg is an empty
    sequence`). It is the model without emb_dims, and inherits the supernet's path exactly."""
    space, m = get_space("small-tiny"), meta(n_dense=3, fields=0)
    base = ArchSampler(space, seed=0).sample()
    arch = Architecture(blocks=base.blocks, emb_dims=())
    assert arch.validate_for(space, 0).emb_dims == ()
    net = Supernet(space, m)
    dense, sparse = torch.randn(16, 3), torch.zeros(16, 0, dtype=torch.long)
    sub = Subnet.from_architecture(arch, space, m, net)
    torch.testing.assert_close(sub(dense, sparse), net(dense, sparse, arch))
    torch.testing.assert_close(sub(dense, sparse), Subnet.from_architecture(base, space, m, net)(dense, sparse))
