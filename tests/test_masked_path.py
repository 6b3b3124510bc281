"""The masked (fixed-shape) supernet path computes what the sliced path computes."""

import numpy as np
import pytest
import torch

from recnas.space import get_space
from recnas.space.samplers import ArchSampler
from recnas.supernet import Supernet
from tests.conftest import TINY_SPACES, tiny_space
from tests.test_supernet import batch, meta


def _grads(net):
    return {n: None if p.grad is None else p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("space_name", TINY_SPACES)
@pytest.mark.parametrize("n_dense", [3, 0])
@pytest.mark.parametrize("strategy", ["single-op-any-conn", "any-path", "single-path"])
@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_masked_path_equals_sliced_in_outputs_and_gradients(space_name, n_dense, strategy, device):
    space, m = tiny_space(space_name), meta(n_dense)
    net = Supernet(space, m).double().to(device)
    dense, sparse = batch(m)
    dense, sparse = dense.double().to(device), sparse.to(device)
    sampler = ArchSampler(space, strategy, seed=3)
    for k in range(4):
        arch = sampler.sample()
        if k == 3:
            arch = arch.model_copy(update={"emb_dims": tuple(int(w) for w in np.random.default_rng(k).integers(1, space.emb_dim + 1, m.n_sparse))})
        net.zero_grad(set_to_none=True)
        sliced = net(dense, sparse, arch)
        sliced.pow(2).sum().backward()
        want = _grads(net)

        net.zero_grad(set_to_none=True)
        masked = net(dense, sparse, net.path_masks(arch, device))
        masked.pow(2).sum().backward()
        for p in net.off_path_parameters(arch):
            assert p.grad is None or p.grad.abs().max() == 0  # off the path: exact zeros
            p.grad = None
        got = _grads(net)

        torch.testing.assert_close(masked, sliced, rtol=1e-9, atol=1e-10)
        assert want.keys() == got.keys()
        for name in want:
            assert (want[name] is None) == (got[name] is None), f"{name}: gradient present in one mode only"
            if want[name] is not None:
                torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-10, msg=name)


def test_masks_mark_the_chosen_path():
    space, m = get_space("full-tiny"), meta()
    arch = ArchSampler(space, seed=0).sample()
    masks = Supernet(space, m).path_masks(arch)
    for i, b in enumerate(arch.blocks):
        assert masks.width[i].sum() == b.dense_dim and masks.tokens[i].sum() == b.sparse_dim
        assert masks.dense_inputs[i].nonzero().flatten().tolist() == list(b.dense_inputs)
        assert masks.sparse_ops[i].nonzero().flatten().tolist() == [space.sparse_ops.index(o) for o in b.sparse_ops]
    assert masks.heads.nonzero().flatten().tolist() == list(arch.dense_leaves())
    assert masks.emb.all()


@pytest.mark.parametrize("distill", [0.0, 0.5])
def test_compiled_supernet_training_takes_masked_paths_and_matches_sliced(tiny_store, monkeypatch, distill):
    """`compile: true` trains a supernet on masked paths; with torch.compile replaced by the
    identity (CI has no GPU and compiling is slow) the masked steps must give the weights the
    sliced steps give (also with in-place distillation, whose teacher is the largest path)."""
    from recnas.train import Trainer, TrainConfig

    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)
    space = get_space("full-tiny")
    weights, masked_flags = [], []
    for compile_ in (False, True):
        torch.manual_seed(0)
        net = Supernet(space, tiny_store.meta)
        cfg = TrainConfig(batch_size=64, max_steps=12, eval_every=0, device="cpu", seed=0, compile=compile_, inplace_distill=distill)
        trainer = Trainer(net, cfg, tiny_store, sampler=ArchSampler(space, seed=5), progress=False)
        masked_flags.append(trainer.masked_paths)
        trainer.fit()
        weights.append({k: v.clone() for k, v in net.state_dict().items()})
    assert masked_flags == [False, True]
    for name in weights[0]:
        got, want = weights[1][name], weights[0][name]
        if name.endswith("attention.qkv.bias"):
            # the key bias shifts every score of a query equally, so its gradient is zero up to
            # float noise, which Adam scales to full-size steps: compare queries and values only
            e = got.numel() // 3
            got, want = torch.cat([got[:e], got[2 * e :]]), torch.cat([want[:e], want[2 * e :]])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)
