"""In-place distillation: the largest path learns from labels, sampled paths also from it."""

import pytest
import torch

from recnas.errors import CheckpointError, ConfigError
from recnas.space import get_space
from recnas.space.samplers import FixedSampler, largest_architecture, random_architecture
from recnas.supernet import Subnet, Supernet
from recnas.train import Trainer, TrainConfig


def test_largest_architecture_holds_every_operator_input_and_max_width():
    space = get_space("full-tiny")
    arch = largest_architecture(space)
    for i, b in enumerate(arch.blocks):
        assert b.dense_ops == tuple(sorted(space.dense_ops)) and b.sparse_ops == tuple(sorted(space.sparse_ops))
        assert b.dense_inputs == b.sparse_inputs == tuple(range(i + 1))
        assert (b.dense_dim, b.sparse_dim) == (space.max_dense, space.max_sparse)


def _fit(store, distill, steps=3):
    space = get_space("full-tiny")
    torch.manual_seed(0)
    net = Supernet(space, store.meta)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # one fixed single-operator path: without distillation the other operators never train
    arch = random_architecture(__import__("numpy").random.default_rng(1), space)
    cfg = TrainConfig(batch_size=64, max_steps=steps, eval_every=0, device="cpu", seed=0, inplace_distill=distill)
    result = Trainer(net, cfg, store, sampler=FixedSampler(arch), progress=False).fit()
    return net, before, arch, result


def test_distillation_trains_the_largest_path_and_changes_the_sampled_paths_updates(tiny_store):
    plain, before, arch, _ = _fit(tiny_store, 0.0)
    distilled, _, _, result = _fit(tiny_store, 0.7)
    unused = [f"blocks.0.dense_ops.{op}" for op in ("fc", "gating") if op not in arch.blocks[0].dense_ops]
    assert unused, "the fixed path must leave an operator unused"
    for prefix in unused:
        names = [n for n in before if n.startswith(prefix)]
        assert all(torch.equal(plain.state_dict()[n], before[n]) for n in names)  # off the path: untouched
        assert any(not torch.equal(distilled.state_dict()[n], before[n]) for n in names)  # the teacher trains it
    # the sampled path's own weights follow a different objective with distillation
    chosen = "blocks.0.dense_proj.0.weight"
    assert not torch.allclose(plain.state_dict()[chosen], distilled.state_dict()[chosen])
    assert result.steps == 3


def test_distillation_needs_a_supernet_with_a_sampler(tiny_store):
    space = get_space("full-tiny")
    arch = random_architecture(__import__("numpy").random.default_rng(0), space)
    cfg = TrainConfig(batch_size=64, max_steps=1, eval_every=0, device="cpu", inplace_distill=0.5)
    with pytest.raises(ConfigError, match="inplace_distill"):
        Trainer(Subnet(arch, space, tiny_store.meta), cfg, tiny_store, progress=False)
    with pytest.raises(ValueError, match="inplace_distill"):
        TrainConfig(inplace_distill=1.5)


def test_resume_refuses_another_inplace_distill(tiny_store, tmp_path):
    """The objective of the steps already taken: a resume under another value used to train on
    and record the new one in config.yaml and model.pt for weights trained under the old."""
    space = get_space("small-tiny")
    arch = random_architecture(__import__("numpy").random.default_rng(1), space)
    cfg = TrainConfig(batch_size=64, max_steps=2, eval_every=0, device="cpu", seed=0)
    Trainer(Supernet(space, tiny_store.meta), cfg, tiny_store, out_dir=tmp_path, sampler=FixedSampler(arch), progress=False).fit()
    more = cfg.model_copy(update={"max_steps": 4, "inplace_distill": 0.5})
    with pytest.raises(CheckpointError, match=r"changed config \(inplace_distill: 0.0 -> 0.5\)"):
        Trainer(Supernet(space, tiny_store.meta), more, tiny_store, out_dir=tmp_path, sampler=FixedSampler(arch), progress=False).fit(resume=True)


def test_the_teacher_learns_from_the_labels_alone(tiny_store):
    # its predictions are the sampled path's soft targets: constants of the sampled path's loss,
    # which must not train the teacher towards the student
    import copy

    import numpy as np
    import torch.nn.functional as F

    from recnas.space import get_space
    from recnas.space.samplers import FixedSampler, random_architecture
    from recnas.supernet import Supernet
    from recnas.train import TrainConfig

    space = get_space("full-tiny")
    torch.manual_seed(0)
    net = Supernet(space, tiny_store.meta)
    start = copy.deepcopy(net)
    arch = random_architecture(np.random.default_rng(1), space)
    t = Trainer(net, TrainConfig(batch_size=64, max_steps=1, eval_every=0, device="cpu", seed=0, inplace_distill=0.7), tiny_store, sampler=FixedSampler(arch), progress=False)
    seen, step, update = {}, t._train_step, t.scaler.step

    def recording_step(batch):
        seen["batch"] = batch
        return step(batch)

    def recording_update(optimizer):
        seen["grads"] = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        return update(optimizer)

    t._train_step, t.scaler.step = recording_step, recording_update
    t.fit()
    b = seen["batch"]
    teacher = start(b.dense, b.sparse, start.largest_architecture()).reshape(-1)
    student = start(b.dense, b.sparse, arch).reshape(-1)
    soft = torch.lerp(b.label, torch.sigmoid(teacher.detach()), 0.7)
    (F.binary_cross_entropy_with_logits(teacher, b.label) + F.binary_cross_entropy_with_logits(student, soft)).backward()
    want = {n: p.grad for n, p in start.named_parameters() if p.grad is not None}
    assert seen["grads"].keys() == want.keys()
    for n in want:
        torch.testing.assert_close(seen["grads"][n], want[n], msg=n)
