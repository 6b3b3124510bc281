"""The Python API as a notebook uses it: wrong arguments get a clear error naming the problem,
nothing is silently ignored or shared, and no process-wide setting changes behind the caller."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recnas.baselines import build_baseline
from recnas.data.loader import BatchLoader
from recnas.data.schema import SPLITS
from recnas.data.store import CTRStore, write_store
from recnas.environment import tf32_matmuls
from recnas.errors import ConfigError
from recnas.hardware import count_costs, measure_latency
from recnas.space import get_space
from recnas.space.samplers import ArchSampler, FixedSampler, random_architecture
from recnas.supernet import Subnet, Supernet, inherit_weights
from recnas.train import TrainConfig, Trainer, evaluate, load_checkpoint, predict_proba, save_checkpoint, seed_everything

from tests.conftest import make_tiny_store


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(batch_size=32, max_steps=12, lr=0.05, device="cpu", eval_every=4, log_every=4), **kw})


def arch_of(space, seed=0):
    return random_architecture(np.random.default_rng(seed), space)


def test_wrong_argument_types_are_named(tiny_store):
    model = build_baseline("lr", tiny_store.meta)
    with pytest.raises(TypeError, match=r"Trainer's cfg must be a TrainConfig, got dict; TrainConfig.from_dict"):
        Trainer(model, {"max_steps": 5}, tiny_store)
    with pytest.raises(TypeError, match=r"Trainer's store must be a CTRStore, got str"):
        Trainer(model, cfg(), str(tiny_store.dir))
    with pytest.raises(TypeError, match=r"dcnv2's meta must be a DatasetMeta, got CTRStore; pass the store's .meta"):
        build_baseline("dcnv2", tiny_store)
    space = get_space("full-tiny")
    with pytest.raises(TypeError, match=r"Supernet's space must be a SearchSpace, got str; recnas.space.get_space"):
        Supernet("full-tiny", tiny_store.meta)
    with pytest.raises(TypeError, match=r"Subnet's arch must be an Architecture, got dict"):
        Subnet(arch_of(space).model_dump(), space, tiny_store.meta)
    with pytest.raises(TypeError, match=r"count_costs's meta must be a DatasetMeta, got CTRStore"):
        count_costs(arch_of(space), space, tiny_store)
    with pytest.raises(TypeError, match=r"ArchSampler's space must be a SearchSpace"):
        ArchSampler("full-tiny")
    with pytest.raises(TypeError, match=r"a store's split is store.split"):
        evaluate(model, tiny_store)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 10.5"):
        BatchLoader(tiny_store.split("train"), 10.5)


def test_a_supernet_needs_a_path_and_a_fixed_model_takes_none(tiny_store):
    """Both used to fail inside torch's module call: "forward() missing 1 required positional
    argument: 'path'", "takes 3 positional arguments but 4 were given"."""
    space = get_space("full-tiny")
    supernet, baseline = Supernet(space, tiny_store.meta), build_baseline("lr", tiny_store.meta)
    with pytest.raises(ConfigError, match="Trainer: a Supernet runs one of its architectures at a time: pass sampler"):
        Trainer(supernet, cfg(), tiny_store)
    with pytest.raises(ConfigError, match="Trainer: a LogisticRegression is one fixed model and takes no sampler"):
        Trainer(baseline, cfg(), tiny_store, sampler=ArchSampler(space))
    with pytest.raises(ConfigError, match="takes no eval_archs"):
        Trainer(baseline, cfg(), tiny_store, eval_archs=[arch_of(space)])
    with pytest.raises(ConfigError, match="evaluate: a Supernet runs one of its architectures at a time: pass arch"):
        evaluate(supernet, tiny_store.split("val"))
    with pytest.raises(ConfigError, match="evaluate: a LogisticRegression is one fixed model and takes no arch"):
        predict_proba(baseline, tiny_store.split("val"), arch=arch_of(space))
    with pytest.raises(ConfigError, match="measure_latency: a Supernet"):
        measure_latency(supernet, batch_size=2, repeats=1, warmup=0)
    assert Trainer(supernet, cfg(eval_every=0), tiny_store, sampler=FixedSampler(arch_of(space)), progress=False).fit().steps == 12


def test_evaluate_refuses_split_settings_for_a_loader(tiny_store):
    """A loader has its own batches and rows: `max_rows` and `batch_size` were ignored without a word."""
    model = build_baseline("lr", tiny_store.meta)
    loader = BatchLoader(tiny_store.split("val"), 16, shuffle=False)
    with pytest.raises(ValueError, match=r"max_rows=5 applies to a split"):
        evaluate(model, loader, max_rows=5)
    assert evaluate(model, tiny_store.split("val"), max_rows=5)["rows"] == 5
    assert evaluate(model, loader)["rows"] == len(tiny_store.split("val"))


def test_a_second_fit_trains_nothing_and_keeps_the_checkpoint(tiny_store, tmp_path):
    """A finished trainer's fit() re-saved checkpoint.pt with the best weights restore_best had
    loaded, as if they were the last (a later resume trained on from them), and re-seeded the RNGs."""
    torch.manual_seed(0)
    model = build_baseline("dlrm", tiny_store.meta, embed_dim=8, bottom_mlp=[8], top_mlp=[8])
    trainer = Trainer(model, cfg(max_steps=40, lr=0.5), tiny_store, out_dir=tmp_path / "run", progress=False, model_spec={"kind": "x"})
    first = trainer.fit()
    assert first.best_val["step"] < 40  # the best weights are not the last: they differ from the checkpoint's
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    second = trainer.fit()
    assert torch.equal(torch.get_rng_state(), state)  # not re-seeded
    again = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    assert (second.steps, second.best_val, second.final_val) == (first.steps, first.best_val, first.final_val)


def test_fit_after_stop_after_goes_on_as_uninterrupted(tiny_store):
    """The second fit() re-seeded the global RNGs mid-run: dropout drew other masks."""

    def train(split: bool):
        seed_everything(0)
        model = build_baseline("dlrm", tiny_store.meta, embed_dim=8, bottom_mlp=[8], top_mlp=[8], dropout=0.3)
        trainer = Trainer(model, cfg(max_steps=20, restore_best=False), tiny_store, progress=False)
        if split:
            assert trainer.fit(stop_after=7).interrupted
        trainer.fit()
        return model.state_dict()

    whole, parts = train(False), train(True)
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def test_write_store_leaves_the_callers_meta_alone(tiny_store, tmp_path):
    """It replaced `meta.rows`: the store the meta came from then refused its own splits."""
    rows = dict(tiny_store.meta.rows)
    write_store(tmp_path / "part", {s: tiny_store.split(s).take(slice(0, 20)) for s in SPLITS}, tiny_store.meta)
    assert tiny_store.meta.rows == rows and CTRStore(tmp_path / "part").meta.rows == {s: 20 for s in SPLITS}
    tiny_store._checked.clear()
    assert len(tiny_store.split("train")) == rows["train"]
    with pytest.raises(Exception, match="val, test missing"):
        write_store(tmp_path / "half", {"train": tiny_store.split("train")}, tiny_store.meta)


def test_save_checkpoint_refuses_what_load_checkpoint_would(tmp_path):
    with pytest.raises(ValueError, match="lacks 'model_spec'"):
        save_checkpoint(tmp_path / "c.pt", {"model": {}})
    assert not (tmp_path / "c.pt").exists()


def test_seed_everything_takes_a_seed_as_every_recnas_seed():
    with pytest.raises(ConfigError, match=r"seed must be an integer in 0\.\.4294967295, got 1.5"):
        seed_everything(1.5)
    with pytest.raises(ConfigError, match="got 4294967296"):
        seed_everything(2**32)
    seed_everything(np.int64(3))


def test_a_subnet_inherits_only_from_a_supernet_of_its_data_and_space(tmp_path, tiny_store):
    """Both used to copy leading slices of other weights without a word: another field's rows
    of the fused table, a narrower token."""
    space = get_space("full-tiny")
    supernet = Supernet(space, tiny_store.meta)
    arch = arch_of(space)
    other = make_tiny_store(tmp_path / "other", vocab_sizes=(11, 7, 5, 9))  # same total of ids, fields in another order
    with pytest.raises(ConfigError, match=r"supernet of other data: its data has field 0 \(C1\) with 7 ids, the subnet's with 11"):
        Subnet.from_architecture(arch, space, other.meta, supernet=supernet)
    narrow = get_space("full-tiny", emb_dim=4)
    with pytest.raises(ConfigError, match="supernet of emb_dim 8: the subnet's space has emb_dim 4"):
        inherit_weights(Subnet(arch, narrow, tiny_store.meta), supernet)
    wide = get_space("full-tiny", dense_dims=(8, 16, 32, 64))  # a wider space holds every path of the narrower one
    dense = torch.randn(4, tiny_store.meta.n_dense)
    sparse = torch.stack([torch.randint(0, v, (4,)) for v in tiny_store.meta.vocab_sizes], 1)
    big = Supernet(wide, tiny_store.meta).eval()
    sub = Subnet.from_architecture(arch, space, tiny_store.meta, supernet=big).eval()
    with torch.no_grad():
        assert torch.equal(sub(dense, sparse), big(dense, sparse, arch))


def test_tf32_is_the_callers_again_after_the_block():
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        with tf32_matmuls():
            assert matmul.allow_tf32
            with tf32_matmuls():
                assert matmul.allow_tf32
            assert matmul.allow_tf32
        assert not matmul.allow_tf32
        with tf32_matmuls(False):
            assert not matmul.allow_tf32
    finally:
        matmul.allow_tf32 = before


def test_training_leaves_the_process_settings_as_it_found_them(tiny_store):
    """A Trainer built on CUDA switched TF32 matmuls on for the rest of the process."""
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_num_threads())
    before = flags()
    trainer = Trainer(build_baseline("lr", tiny_store.meta), cfg(), tiny_store, progress=False)
    trainer.fit()
    trainer.evaluate()
    assert flags() == before


def test_embedding_search_refuses_a_budget_before_training(tiny_store):
    from recnas.embedding import EmbedSearchConfig, run_search

    with pytest.raises(ConfigError, match="cannot be met"):
        run_search(tiny_store, EmbedSearchConfig(widths=(2, 4), device="cpu"), budget=10)
    with pytest.raises(TypeError, match="run_search's cfg must be an EmbedSearchConfig, got dict"):
        run_search(tiny_store, {"widths": [2, 4]}, budget=10_000)


def test_run_job_refuses_a_dict(tmp_path):
    from recnas.search.pipeline import run_job

    with pytest.raises(TypeError, match="run_job's cfg must be a JobConfig, got dict; recnas.search.job.load_job_config"):
        run_job({"seed": 1}, tmp_path / "job")


def test_a_trainer_keeps_its_own_config(tiny_store):
    """A change to the caller's TrainConfig after the Trainer was built reached it halfway: the
    checkpoint's config said one lr while the optimizer trained at another."""
    config = cfg(lr=1e-3, eval_every=0)
    trainer = Trainer(build_baseline("lr", tiny_store.meta), config, tiny_store, progress=False)
    config.lr = 0.5
    trainer.fit()
    assert trainer.cfg.lr == trainer.optimizer.param_groups[0]["lr"] == 1e-3


def test_overrides_are_keywords():
    """A dict in `source`'s place was taken as the source, and its overrides dropped."""
    with pytest.raises(TypeError):
        cfg().with_overrides({"max_steps": 100})
    assert cfg().with_overrides(max_steps=100).max_steps == 100
