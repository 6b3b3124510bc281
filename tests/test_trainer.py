"""Training loop: learning, metrics, exact resume, determinism, early stopping, samplers."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.metrics import log_loss, roc_auc_score

from recnas.data.loader import BatchLoader
from recnas.errors import ConfigError, RecnasError
from recnas.ops.embedding import FieldEmbedding
from recnas.space.samplers import FixedSampler
from recnas.train import TrainConfig, Trainer, ctr_metrics, evaluate
from recnas.train.plan import lr_factor


class ToyMLP(nn.Module):
    """Embeddings + dense -> small MLP (with dropout, so resume must restore the RNG too)."""

    def __init__(self, meta, dim: int = 4, hidden: int = 8, dropout: float = 0.1):
        super().__init__()
        self.embedding = FieldEmbedding(meta.vocab_sizes, dim, init_std=0.1)
        self.mlp = nn.Sequential(nn.Linear(meta.n_dense + meta.n_sparse * dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, dense, sparse):
        x = torch.cat([dense, self.embedding(sparse).flatten(1)], 1)
        return self.mlp(x).squeeze(1)


class ToySupernet(nn.Module):
    """forward(dense, sparse, arch): `arch` is a hidden width; the subnet uses a weight slice."""

    def __init__(self, meta, dim: int = 4, hidden: int = 8):
        super().__init__()
        self.embedding = FieldEmbedding(meta.vocab_sizes, dim, init_std=0.1)
        self.fc = nn.Linear(meta.n_dense + meta.n_sparse * dim, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, dense, sparse, arch):
        x = torch.cat([dense, self.embedding(sparse).flatten(1)], 1)
        h = torch.relu(nn.functional.linear(x, self.fc.weight[:arch], self.fc.bias[:arch]))
        return nn.functional.linear(h, self.out.weight[:, :arch], self.out.bias).squeeze(1)


class ToySampler:
    """Random widths from a numpy Generator (its state has 128-bit ints: checks they survive)."""

    def __init__(self, seed: int = 0, choices=(2, 4, 8)):
        self.rng = np.random.default_rng(seed)
        self.choices = choices
        self.calls = 0

    def sample(self):
        self.calls += 1
        return int(self.rng.choice(self.choices))

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(batch_size=32, epochs=2, lr=0.02, device="cpu", log_every=5, seed=0)
    return TrainConfig(**{**base, **kw})


def make_model(meta, seed=0, cls=ToyMLP, **kw):
    torch.manual_seed(seed)
    return cls(meta, **kw)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- learning and metrics ----------------------------------------------------------------------
def test_training_reduces_validation_logloss(tiny_store):
    model = make_model(tiny_store.meta)
    before = evaluate(model, tiny_store.split("val"))
    result = Trainer(model, tiny_cfg(epochs=4), tiny_store, progress=False).fit()
    after = evaluate(model, tiny_store.split("val"))
    assert result.steps == 4 * (480 // 32) and result.epochs == 4
    assert after["logloss"] < before["logloss"] - 0.05, (before, after)
    assert after["auc"] > 0.7 and after["rows"] == 60
    assert result.best_val["logloss"] == pytest.approx(min(h["val_logloss"] for h in result.history))
    assert len(result.history) == 4 and result.samples_per_s > 0


def test_ctr_metrics_match_sklearn_hand_example():
    y = np.array([0, 1, 1, 0, 1, 0], dtype=np.float32)
    z = np.array([-2.0, 0.5, 3.0, 0.1, -0.3, -1.0])
    p = 1 / (1 + np.exp(-z))
    m = ctr_metrics(y, z)
    assert m["logloss"] == pytest.approx(log_loss(y, p)) and m["rows"] == 6
    # by hand: positives' probs (0.62, 0.95, 0.43) vs negatives (0.12, 0.52, 0.27): 8 of 9 pairs ordered
    assert m["auc"] == pytest.approx(roc_auc_score(y, p)) == pytest.approx(8 / 9)
    one_class = ctr_metrics(np.ones(3), np.array([0.1, 0.2, 0.3]))
    assert math.isnan(one_class["auc"]) and one_class["logloss"] == pytest.approx(-np.mean(np.log(1 / (1 + np.exp(-np.array([0.1, 0.2, 0.3]))))))
    assert math.isnan(ctr_metrics(np.empty(0), np.empty(0))["logloss"])
    diverged = ctr_metrics(y, np.where(z > 0, np.nan, z))  # a diverged model: NaN, not sklearn's ValueError
    assert math.isnan(diverged["logloss"]) and math.isnan(diverged["auc"]) and diverged["rows"] == 6
    with pytest.raises(ValueError, match="differ in length"):
        ctr_metrics(np.ones(2), np.ones(3))


def test_json_safe_nulls_every_nan_and_inf_however_deep():
    # metrics.json's history is a list of evaluations, whose AUC is NaN on a split of one class
    from recnas.train.metrics import json_safe

    got = json_safe({"history": [{"val_auc": math.nan, "step": 1}], "pair": (math.inf, 0.5), "best": {"auc": -math.inf}})
    assert got == {"history": [{"val_auc": None, "step": 1}], "pair": [None, 0.5], "best": {"auc": None}}
    json.dumps(got, allow_nan=False)


@pytest.mark.parametrize("a, b, same", [("cuda:0", "cuda:1", False), ("cuda", "cuda:0", True), ("cuda", "cuda:1", False), ("cpu", "cuda:0", False), ("cpu", "cpu", True)])
def test_same_device_takes_cuda_for_the_current_device(monkeypatch, a, b, same):
    from recnas.train.metrics import same_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # no GPU needed to compare names
    assert same_device(torch.device(a), torch.device(b)) is same


def test_ctr_metrics_of_huge_logits_print_no_numpy_warning():
    """A far-off model's logit below -709 overflowed exp(-z): its probability was 0 as it
    should be, but numpy's RuntimeWarning (two lines naming metrics.py) landed among the
    training and evaluation lines."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = ctr_metrics(np.array([0.0, 1.0, 1.0]), np.array([-1000.0, 1000.0, -1000.0]))
    assert m["auc"] == 0.75 and math.isfinite(m["logloss"])


def test_evaluate_matches_sklearn_and_leaves_loader_untouched(tiny_store):
    model = make_model(tiny_store.meta).eval()
    val = tiny_store.split("val")
    with torch.no_grad():
        z = model(torch.tensor(np.array(val.dense)), torch.tensor(np.array(val.sparse)).long()).numpy()
    loader = BatchLoader(val, 16, shuffle=True, seed=1)
    next(iter(loader))
    state = loader.state_dict()
    m = evaluate(model, loader)
    assert loader.state_dict() == state and not model.training  # the model too is left in the mode it was in
    evaluate(model.train(), loader)
    assert model.training
    assert m["logloss"] == pytest.approx(log_loss(val.label, 1 / (1 + np.exp(-z)), labels=[0, 1]), rel=1e-5)
    assert m["auc"] == pytest.approx(roc_auc_score(val.label, z), rel=1e-5)
    with pytest.raises(TypeError):
        evaluate(model, [1, 2, 3])


def test_trainer_evaluates_the_loader_it_is_given_even_an_empty_one(tiny_store):
    """`split_loader or self.val_loader`: a loader of no batches is false (`__len__`), so an
    empty split was scored as the validation split without a word (its metrics and row count)."""
    from recnas.data.store import SplitArrays

    trainer = Trainer(make_model(tiny_store.meta), tiny_cfg(), tiny_store, progress=False)
    test = tiny_store.split("test")
    assert trainer.evaluate(BatchLoader(test, 16, shuffle=False))["rows"] == len(test)
    empty = BatchLoader(SplitArrays(test.dense[:0], test.sparse[:0], test.label[:0]), 16, shuffle=False)
    m = trainer.evaluate(empty)
    assert m["rows"] == 0 and math.isnan(m["logloss"])
    assert trainer.evaluate()["rows"] == len(tiny_store.split("val"))


def test_cpu_evaluation_batches_are_capped_and_give_the_same_metrics(tiny_store):
    from recnas.train.metrics import CPU_EVAL_BATCH, eval_batch_size, predict

    assert eval_batch_size("cpu") == CPU_EVAL_BATCH == 1024 and eval_batch_size("cpu", 1024) == 1024
    assert eval_batch_size("cpu", 32) == 128 and eval_batch_size("cuda") == 4096 and eval_batch_size("cuda", 2048) == 8192
    trainer = Trainer(make_model(tiny_store.meta), tiny_cfg(batch_size=512), tiny_store, progress=False)
    assert trainer.val_loader.batch_size == 1024
    assert Trainer(make_model(tiny_store.meta), tiny_cfg(eval_batch_size=7), tiny_store, progress=False).val_loader.batch_size == 7
    model, val = make_model(tiny_store.meta), tiny_store.split("val")
    _, whole = predict(model, val, batch_size=4096)
    for batch in (None, 7):
        np.testing.assert_allclose(predict(model, val, batch_size=batch)[1], whole, rtol=1e-6, atol=1e-6)


def test_predict_refuses_a_model_without_one_logit_per_row(tiny_store):
    """predict fills one buffer of the pass's rows: a model giving another number of logits per
    batch is a clear error (it used to be caught only by ctr_metrics, after the whole pass)."""
    from recnas.train.metrics import predict

    class TwoPerRow(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, dense, sparse):
            return torch.zeros(2 * len(dense)) + self.w

    with pytest.raises(ValueError, match="one per row"):
        predict(TwoPerRow(), tiny_store.split("val"), batch_size=7)
    labels, logits = predict(make_model(tiny_store.meta), tiny_store.split("val"), batch_size=7)
    assert len(labels) == len(logits) == len(tiny_store.split("val"))
    np.testing.assert_array_equal(labels, np.asarray(tiny_store.split("val").label))


def test_lr_schedule_shapes():
    assert [lr_factor(s, 4, 20, "constant") for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(4, 4, 20, "cosine") == pytest.approx(1.0) and lr_factor(20, 4, 20, "cosine") == pytest.approx(0.0)
    assert lr_factor(12, 4, 20, "linear") == pytest.approx(0.5) and lr_factor(12, 4, 20, "cosine") == pytest.approx(0.5)


@pytest.mark.parametrize(
    "overrides, emb, rest",
    [
        ({"weight_decay": 0.01}, (0.02, 0.01), (0.02, 0.01)),  # one group, as before
        ({"embedding_lr": 0.5, "weight_decay": 0.01}, (0.5, 0.0), (0.02, 0.01)),  # embedding_lr alone: no decay on the tables
        ({"weight_decay": 0.01, "embedding_weight_decay": 0.1}, (0.02, 0.1), (0.02, 0.01)),
        ({"embedding_weight_decay": 0.1}, (0.02, 0.1), (0.02, 0.0)),  # the tables alone
        ({"embedding_lr": 0.5, "weight_decay": 0.01, "embedding_weight_decay": 0.1}, (0.5, 0.1), (0.02, 0.01)),
    ],
)
def test_embedding_lr_and_weight_decay_apply_to_the_tables_only(tiny_store, overrides, emb, rest):
    model = make_model(tiny_store.meta)
    t = Trainer(model, tiny_cfg(**overrides), tiny_store, progress=False)
    groups = {id(p): g for g in t.optimizer.param_groups for p in g["params"]}
    assert (groups[id(model.embedding.weight)]["lr"], groups[id(model.embedding.weight)]["weight_decay"]) == emb
    assert (groups[id(model.mlp[0].weight)]["lr"], groups[id(model.mlp[0].weight)]["weight_decay"]) == rest
    assert len(t.optimizer.param_groups) == (1 if emb == rest else 2)


def test_embedding_weight_decay_shrinks_the_tables(tiny_store):
    """A big table-only decay pulls the embedding tables toward 0."""
    norms = {}
    for ewd in (None, 1.0):
        model = make_model(tiny_store.meta)
        Trainer(model, tiny_cfg(epochs=1, embedding_weight_decay=ewd), tiny_store, progress=False).fit()
        norms[ewd] = model.embedding.weight.norm().item()
    assert norms[1.0] < 0.8 * norms[None]


# -- determinism and exact resume -----------------------------------------------------------------
def test_same_seed_same_result_different_seed_differs(tiny_store):
    runs = []
    for seed in (0, 0, 1):
        model = make_model(tiny_store.meta)
        Trainer(model, tiny_cfg(seed=seed, epochs=1), tiny_store, progress=False).fit()
        runs.append(weights(model))
    assert_same_weights(runs[0], runs[1])
    assert not torch.equal(runs[0]["mlp.0.weight"], runs[2]["mlp.0.weight"])


@pytest.mark.parametrize("supernet", [False, True])
def test_resume_after_interruption_equals_uninterrupted_run(tiny_store, tmp_path, supernet):
    cls = ToySupernet if supernet else ToyMLP
    cfg = tiny_cfg(epochs=3, eval_every=7, checkpoint_every=10, lr_schedule="cosine", warmup_steps=3, early_stopping_patience=50)

    def trainer(out, seed=0):
        return Trainer(make_model(tiny_store.meta, seed=seed, cls=cls), cfg, tiny_store, out_dir=out, progress=False, sampler=ToySampler(5) if supernet else None, model_spec={"kind": "toy"})

    full = trainer(tmp_path / "full")
    ref = full.fit()
    part = trainer(tmp_path / "part")
    cut = part.fit(stop_after=17)  # mid-epoch, between checkpoints and evaluations
    assert cut.interrupted and cut.steps == 17
    again = trainer(tmp_path / "part", seed=99).fit(resume=True, stop_after=17)  # already there: not one step more
    assert again.interrupted and again.steps == 17
    resumed = trainer(tmp_path / "part", seed=99)  # different init: weights must come from the file
    res = resumed.fit(resume=True)
    assert res.steps == ref.steps == 45 and not res.interrupted
    assert_same_weights(weights(full.model), weights(resumed.model))
    assert [h["val_logloss"] for h in res.history] == [h["val_logloss"] for h in ref.history]
    # the logged train_loss too: it averages the steps since the last log, some of them before
    # the interruption (their sum is in the checkpoint; it used to restart from the resume)
    assert res.history == ref.history
    if supernet:
        assert resumed.sampler.calls == ref.steps - 17  # the sampler stream continued, not restarted
        assert full.eval_archs == resumed.eval_archs


def test_a_cpu_run_resumed_with_another_thread_count_says_so(tiny_store, tmp_path, caplog):
    """The thread count rounds every CPU sum: a run resumed with another (`--threads` left out,
    or another machine) went on silently, ending as neither count trains it, while metrics.json
    recorded the new count alone. Now a warning names both; the same count says nothing."""
    import logging

    import torch

    out = tmp_path / "run"
    before = torch.get_num_threads()
    try:
        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=2), tiny_store, out_dir=out, progress=False, model_spec={"kind": "toy"}).fit(stop_after=3)
        with caplog.at_level(logging.WARNING, logger="recnas"):
            Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=2), tiny_store, out_dir=out, progress=False, model_spec={"kind": "toy"}).fit(resume=True, stop_after=4)
            assert "CPU threads" not in caplog.text
            torch.set_num_threads(before + 1)
            Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=2), tiny_store, out_dir=out, progress=False, model_spec={"kind": "toy"}).fit(resume=True)
    finally:
        torch.set_num_threads(before)
    assert f"resuming with {before + 1} CPU threads; the checkpoint's steps ran with {before}" in caplog.text
    assert f"--threads {before} continues it" in caplog.text


def test_a_cpu_run_resumed_on_a_cpu_of_other_kernels_says_so(tiny_store, tmp_path, caplog, monkeypatch):
    """The same code, data and threads gave another default job on another CPU (PyTorch's
    kernels of another instruction set sum in another order): a run resumed there went on
    silently. Checkpoints record the kernel set; a resume on another warns, naming both; the
    same says nothing."""
    import logging

    import torch

    out = tmp_path / "run"
    ran_with = torch.backends.cpu.get_cpu_capability()
    Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=2), tiny_store, out_dir=out, progress=False, model_spec={"kind": "toy"}).fit(stop_after=3)
    with caplog.at_level(logging.WARNING, logger="recnas"):
        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=2), tiny_store, out_dir=out, progress=False, model_spec={"kind": "toy"}).fit(resume=True, stop_after=4)
        assert "kernels" not in caplog.text
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "OTHER")
        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=2), tiny_store, out_dir=out, progress=False, model_spec={"kind": "toy"}).fit(resume=True)
    assert f"resuming on a CPU with PyTorch's OTHER kernels; the checkpoint's steps ran with its {ran_with} kernels" in caplog.text


def test_a_resumed_run_records_the_last_logged_train_loss_at_an_evaluation_before_its_first_log(tiny_store, tmp_path):
    # an evaluation between two logs records the last logged train_loss; resumed between a log
    # (step 20) and an evaluation (25), the run recorded None there instead
    cfg = tiny_cfg(max_steps=50, eval_every=25, log_every=10, checkpoint_every=20)
    ref = Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=tmp_path / "full", progress=False).fit()
    Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=tmp_path / "part", progress=False).fit(stop_after=22)
    res = Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=tmp_path / "part", progress=False).fit(resume=True)
    assert ref.history[0]["step"] == 25 and ref.history[0]["train_loss"] is not None
    assert res.history == ref.history


def test_fixed_arch_supernet_finetune_without_outputs(tiny_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = make_model(tiny_store.meta, cls=ToySupernet)
    before = evaluate(model, tiny_store.split("val"), arch=4)
    t = Trainer(model, tiny_cfg(max_steps=20, eval_every=0), tiny_store, sampler=FixedSampler(4), progress=False)
    res = t.fit()
    assert res.steps == 20 and res.history == [] and res.final_val is None and t.val_loader is None
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no out_dir: nothing written beside the store
    assert model.fc.weight.grad is not None and model.fc.weight.grad[4:].abs().sum() == 0  # only the slice trained
    assert evaluate(model, tiny_store.split("val"), arch=4)["logloss"] < before["logloss"]


def test_early_stopping_restores_best_weights(tiny_store, tmp_path):
    model = make_model(tiny_store.meta)
    cfg = tiny_cfg(eval_every=1, early_stopping_patience=2, epochs=5)
    t = Trainer(model, cfg, tiny_store, out_dir=tmp_path, progress=False)
    losses = iter([0.6, 0.5, 0.55, 0.56, 0.4])
    snap = {}

    def fake_eval(*a, **k):
        v = next(losses)
        if v == 0.5:
            snap.update(weights(t.model))
        return {"logloss": v, "auc": 0.5, "rows": 60}

    t.evaluate = fake_eval
    res = t.fit()
    assert res.stopped_early and res.steps == 4
    assert res.best_val == {"logloss": 0.5, "auc": 0.5, "step": 2} and res.final_val["logloss"] == 0.56
    assert_same_weights(weights(model), snap)
    again = Trainer(make_model(tiny_store.meta, seed=3), cfg, tiny_store, out_dir=tmp_path, progress=False).fit(resume=True)
    assert again.stopped_early and again.steps == 4  # resuming an early-stopped run does not train on


def test_outputs_written(tiny_store, tmp_path):
    out = tmp_path / "run"
    res = Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False, model_spec={"kind": "toy"}).fit()
    assert {p.name for p in out.iterdir()} >= {"model.pt", "checkpoint.pt", "metrics.json", "config.yaml"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == res.steps and metrics["best_val"]["logloss"] == pytest.approx(res.best_val["logloss"])
    assert TrainConfig.from_yaml(out / "config.yaml") == tiny_cfg(epochs=1)


def test_divergence_is_a_clear_error(tiny_store):
    class Nan(ToyMLP):
        def forward(self, dense, sparse):
            return super().forward(dense, sparse) * float("nan")

    with pytest.raises(RecnasError, match="diverged.*step 5"):
        Trainer(make_model(tiny_store.meta, cls=Nan), tiny_cfg(), tiny_store, progress=False).fit()


def test_fp16_on_cpu_is_refused(tiny_store):
    from recnas.errors import ConfigError

    with pytest.raises(ConfigError, match="fp16"):
        Trainer(make_model(tiny_store.meta), tiny_cfg(amp="fp16"), tiny_store, progress=False)


def test_tensorboard_scalars(tiny_store, tmp_path, monkeypatch):
    """The writer gets train and val scalars under out_dir/tb (a recording fake: the real
    tensorboard import alone takes seconds)."""
    import sys
    import types

    calls = []

    class FakeWriter:
        def __init__(self, log_dir, purge_step=None):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, step))

        def close(self):
            calls.append(("close", None))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    # 15 steps: the last one, off both cadences, is logged and evaluated too
    Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1, log_every=4, eval_every=10, tensorboard=True), tiny_store, out_dir=tmp_path / "run", progress=False).fit()
    assert calls[0] == ("init", str(tmp_path / "run" / "tb")) and calls[-1][0] == "close"
    tags = {c for c, _ in calls}
    assert {"train/loss", "train/lr", "train/samples_per_s", "val/logloss", "val/auc"} <= tags
    assert [s for c, s in calls if c == "val/logloss"] == [10, 15] and [s for c, s in calls if c == "train/loss"] == [4, 8, 12, 15]


def test_tensorboard_is_written_by_rank_zero_alone(tiny_store, tmp_path, monkeypatch):
    """Under --nproc every rank wrote an events file into tb/ (a second curve of each scalar,
    its own samples_per_s among them); rank 0 writes the run's files, TensorBoard's too."""
    import types

    from recnas.train.distributed import DistInfo

    made = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=lambda **kw: made.append(kw) or "writer"))
    trainer = Trainer(make_model(tiny_store.meta), tiny_cfg(tensorboard=True), tiny_store, out_dir=tmp_path / "run", progress=False)
    assert trainer._tensorboard() == "writer"
    trainer.dist = DistInfo(rank=1, world_size=2, local_rank=1)
    assert trainer._tensorboard() is None and len(made) == 1


def test_tensorboard_shows_a_fresh_run_alone_after_one_it_replaced_and_a_resumed_one_whole(tiny_store, tmp_path):
    """A fresh run into a folder with a run's tb/ (--overwrite) left its events in view: each
    scalar showed the old run's points and the new run's as one curve. A resumed run hid the
    points of its checkpoint's step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    for lr, steps in ((0.5, 10), (0.01, 5)):
        Trainer(make_model(tiny_store.meta), tiny_cfg(tensorboard=True, max_steps=steps, lr=lr, log_every=1, eval_every=0), tiny_store, out_dir=out, progress=False).fit()
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/lr")] == [(s, pytest.approx(0.01)) for s in range(1, 6)]
    # a resumed run hides what came after its checkpoint, not the checkpoint step's own points
    # (written before the checkpoint, and not written again)
    cfg = tiny_cfg(tensorboard=True, max_steps=6, log_every=1, eval_every=2, checkpoint_every=100)
    Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=tmp_path / "cut", progress=False).fit(stop_after=4)
    Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=tmp_path / "cut", progress=False).fit(resume=True)
    events = EventAccumulator(str(tmp_path / "cut" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("val/logloss")] == [2, 4, 6]


_CTRL_C_THEN_LEAVE_AT_ONCE = """
import os, sys
from recnas.data.store import CTRStore
from recnas.train import Trainer
from tests.test_trainer import make_model, tiny_cfg
store = CTRStore(sys.argv[1])
trainer = Trainer(make_model(store.meta), tiny_cfg(tensorboard=True, max_steps=10, log_every=1, eval_every=0), store, out_dir=sys.argv[2], progress=False)
step = trainer._train_step
def ctrl_c_at_step_6(batch):
    if trainer.step == 5:
        raise KeyboardInterrupt
    return step(batch)
trainer._train_step = ctrl_c_at_step_6
try:
    trainer.fit()
except KeyboardInterrupt:
    os._exit(130)  # as an interrupted rank of --nproc leaves: no interpreter teardown
"""


def test_tensorboard_keeps_the_points_logged_before_a_ctrl_c_however_the_process_leaves(tiny_store, tmp_path):
    """The events writer was closed only after a loop that ended normally: after a Ctrl-C its
    file was flushed by the interpreter's teardown alone, which an interrupted rank of --nproc
    skips (os._exit): the points logged since the last flush (every 120 s) were lost."""
    pytest.importorskip("tensorboard")
    import os
    import subprocess
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _CTRL_C_THEN_LEAVE_AT_ONCE, str(tiny_store.dir), str(tmp_path / "run")], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 130, r.stderr
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"] and [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5]


def test_prebuilt_loaders_without_store(tiny_store):
    train = BatchLoader(tiny_store.split("train"), 32, seed=0, drop_last=True)
    val = BatchLoader(tiny_store.split("val"), 64, shuffle=False)
    model = make_model(tiny_store.meta)
    res = Trainer(model, tiny_cfg(epochs=1, amp="bf16"), None, train_loader=train, val_loader=val, progress=False).fit()
    assert res.steps == 15 and res.epochs == 1 and train.state_dict()["position"] == 15 and res.best_val["logloss"] < 1.0  # bf16 autocast runs on CPU too
    with pytest.raises(ValueError, match="needs a store"):
        Trainer(model, tiny_cfg(), None, train_loader=train, progress=False)


def test_quantisation_aware_training_keeps_full_precision_weights(tiny_store):
    """run_context = quantized(...): every step's forward/backward and every evaluation run on
    fake-quantised weights, while the optimizer updates (and checkpoints keep) the latent
    full-precision weights."""
    import contextlib
    import functools

    from recnas.hardware import PIMConfig
    from recnas.hardware.quant import fake_quant, quantized

    hw = PIMConfig(weight_bits=4, act_bits=4)
    entered = []

    @contextlib.contextmanager
    def counting(model):
        with quantized(model, hw):
            entered.append(1)
            yield

    model = make_model(tiny_store.meta)
    result = Trainer(model, tiny_cfg(epochs=2), tiny_store, progress=False, run_context=counting).fit()
    steps = result.steps
    assert len(entered) == steps + len(result.history) and len(result.history) == 2  # every step and evaluation
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][0]
    assert not torch.equal(linear.weight, fake_quant(linear.weight, 4))  # latent weights, not the 4-bit grid
    # the recorded validation loss is the quantised model's
    with quantized(model, hw):
        q = evaluate(model, tiny_store.split("val"))["logloss"]
    assert result.best_val["logloss"] == pytest.approx(q, abs=1e-6)  # restore_best: the final weights are the best
    # the same training without the context differs: the context was really in the loop
    plain = make_model(tiny_store.meta)
    Trainer(plain, tiny_cfg(epochs=2), tiny_store, progress=False).fit()
    assert not torch.equal(next(plain.parameters()), next(model.parameters()))
    again = make_model(tiny_store.meta)
    Trainer(again, tiny_cfg(epochs=2), tiny_store, progress=False, run_context=functools.partial(quantized, config=hw)).fit()
    assert_same_weights(weights(again), weights(model))  # deterministic


def test_tensorboard_without_the_package_is_a_config_error(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    trainer = Trainer(make_model(tiny_store.meta), tiny_cfg(tensorboard=True, max_steps=2), tiny_store, out_dir=tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="tensorboard: true needs the tensorboard package"):
        trainer.fit()


@pytest.mark.parametrize("kw", [dict(batch_size=32), dict(batch_size=7, epochs=3), dict(batch_size=10_000), dict(batch_size=32, max_train_rows=50), dict(batch_size=32, max_steps=4)])
def test_planned_steps_are_the_trainers(tiny_store, kw):
    """The training commands refuse a warmup longer than the run before building a Trainer:
    the steps they count must be the ones it takes."""
    from recnas.train.plan import planned_steps

    cfg = tiny_cfg(**kw)
    assert planned_steps(cfg, tiny_store.meta.rows["train"]) == Trainer(make_model(tiny_store.meta), cfg, tiny_store).total_steps


def test_a_warmup_longer_than_an_epochs_run_is_warned_about(tiny_store, caplog):
    """`recnas search --budget gpu` on its own 2M-row synthetic data warms the supernet up for 500
    of its 390 steps: the lr never reaches its value. The training commands refuse such a run;
    inside a job the trainer says so."""
    import logging

    steps = len(tiny_store.split("train")) // 32
    with caplog.at_level(logging.WARNING, logger="recnas.train"):
        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1, warmup_steps=steps + 10), tiny_store, progress=False)
    assert f"warmup_steps ({steps + 10}) outlasts this run's {steps} steps" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recnas.train"):
        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1, warmup_steps=steps), tiny_store, progress=False)
    assert "outlasts" not in caplog.text


def test_a_validation_split_of_one_class_logs_auc_n_a(tmp_path, caplog):
    """All labels 0 (or 1 click in 2,000 rows, none of them in val): AUC is undefined. The run's
    summary line said `auc n/a`, but every evaluation line before it `val_auc nan`."""
    import logging

    from recnas.data.schema import SPLITS, DatasetMeta
    from recnas.data.store import CTRStore, SplitArrays, write_store

    rng = np.random.default_rng(0)
    splits = {s: SplitArrays(rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 5, (n, 2)).astype(np.int32), np.zeros(n, np.float32)) for s, n in zip(SPLITS, (64, 16, 16))}
    meta = DatasetMeta(name="zeros", dense_names=["I1", "I2"], cat_names=["C1", "C2"], vocab_sizes=[5, 5], rows={}, positive_rate={s: 0.0 for s in SPLITS})
    write_store(tmp_path / "zeros", splits, meta)
    store = CTRStore(tmp_path / "zeros")
    with caplog.at_level(logging.INFO, logger="recnas.train"):
        Trainer(make_model(store.meta), tiny_cfg(epochs=1), store, progress=False).fit()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert lines and all(line.endswith("val_auc n/a") for line in lines), lines


def test_divergence_on_huge_dense_values_names_them(tmp_path, tiny_store):
    """A store prepared with `dense_transform: none` from values like 1e30: every model
    diverged with "lower lr or set grad_clip", which no lr fixes; the error now names the
    magnitude of the dense features and the transform that does."""
    from recnas.data.schema import SPLITS, DatasetMeta
    from recnas.data.store import CTRStore, SplitArrays, write_store
    from recnas.baselines import build_baseline
    from recnas.errors import TrainingDiverged

    rng = np.random.default_rng(0)
    splits = {s: SplitArrays(np.full((n, 2), 1e30, np.float32), rng.integers(0, 5, (n, 2)).astype(np.int32), (np.arange(n) % 2).astype(np.float32)) for s, n in zip(SPLITS, (64, 16, 16))}
    meta = DatasetMeta(name="huge", dense_names=["I1", "I2"], cat_names=["C1", "C2"], vocab_sizes=[5, 5], rows={}, positive_rate={s: 0.5 for s in SPLITS}, encoding={"kind": "hash", "buckets": 5, "dense_transform": "none"})
    write_store(tmp_path / "huge", splits, meta)
    store = CTRStore(tmp_path / "huge")
    with pytest.raises(TrainingDiverged, match=r"lower lr or set grad_clip; but the train split's dense features reach \|x\| = 1e\+30 \(prepared with dense_transform: none\): models diverge or learn nothing at such magnitudes; prepare the data with dense_transform: log1p"):
        Trainer(build_baseline("deepfm", store.meta), tiny_cfg(epochs=1, log_every=1), store, progress=False).fit()  # its FM term squares them
    assert Trainer(make_model(tiny_store.meta), tiny_cfg(), tiny_store, progress=False)._dense_scale_hint() == ""  # ordinary values: no hint


def test_a_nan_evaluation_ends_the_run_as_a_divergence_even_when_early_stopping_would(tiny_store, tmp_path):
    """A NaN validation log loss (NaN logits) became the best evaluation (the first always did)
    and no later one could beat it, so early stopping ended a diverged run between two logs of
    its train loss: exit 0, NaN weights written as model.pt, "best val logloss n/a". The
    evaluation now ends the run as the train loss's check does, before any checkpoint of it."""
    from recnas.errors import TrainingDiverged

    class Nan(ToyMLP):
        def forward(self, dense, sparse):
            return super().forward(dense, sparse) * float("nan")

    cfg = tiny_cfg(log_every=100, eval_every=1, early_stopping_patience=1, max_steps=50)
    with pytest.raises(TrainingDiverged, match=r"training diverged: validation log loss NaN at step 1 \(the model's logits are not numbers\); lower lr or set grad_clip"):
        Trainer(make_model(tiny_store.meta, cls=Nan), cfg, tiny_store, out_dir=tmp_path / "run", progress=False).fit()
    assert not (tmp_path / "run" / "model.pt").exists() and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_nan_evaluation_on_huge_validation_values_names_them(tmp_path):
    """Weights trained on ordinary rows, validation rows of ~1e38: the logits there are NaN. The
    run used to finish, exit 0, with a NaN best; the error names the validation split's values."""
    from recnas.baselines import build_baseline
    from recnas.data.store import CTRStore
    from recnas.errors import TrainingDiverged
    from tests.conftest import make_tiny_store

    store = make_tiny_store(tmp_path / "tiny")
    dense = np.load(store.dir / "val" / "dense.npy", mmap_mode="r+")
    dense[0] = 3e38  # DCN-v2's cross layers square it: inf, then inf - inf
    dense.flush()
    del dense
    store = CTRStore(store.dir)
    model = build_baseline("dcnv2", store.meta, mlp=[8], embed_dim=4)
    with pytest.raises(TrainingDiverged, match=r"validation log loss is NaN at step 15: the model's weights are finite.*the val split's dense features reach \|x\| = 3e\+38"):
        Trainer(model, tiny_cfg(epochs=1), store, progress=False).fit()


class LastUpdateNan(ToyMLP):
    """Its output layer's gradient is NaN while every loss stays finite until the next step's:
    one update leaves NaN weights that no loss read yet has seen."""

    def __init__(self, meta, **kw):
        super().__init__(meta, **kw)
        self.mlp[-1].weight.register_hook(lambda g: g * float("nan"))


@pytest.mark.parametrize("where", ["end", "checkpoint"])
def test_nan_weights_after_the_last_loss_read_are_a_divergence(tiny_store, tmp_path, where):
    """The loss is read every log_every steps, before each step's update: a run whose update
    after the last read overflowed wrote NaN weights as model.pt and exit 0 when it ended
    without an evaluation (eval_every 0, as a search's fine-tunes do: the candidate then
    scored NaN), and a checkpoint of NaN weights between two logs, which a resume loaded."""
    from recnas.errors import TrainingDiverged

    cfg = tiny_cfg(eval_every=0, log_every=100, **(dict(max_steps=1) if where == "end" else dict(max_steps=3, checkpoint_every=1)))
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"training diverged: the weights hold NaN or inf \(mlp\.3\.weight\) after step 1; lower lr or set grad_clip$"):
        Trainer(make_model(tiny_store.meta, cls=LastUpdateNan), cfg, tiny_store, out_dir=out, progress=False).fit()
    assert not any(out.glob("*.pt"))
    if where == "end":  # without a run folder too (a search's fine-tune)
        with pytest.raises(TrainingDiverged, match=r"after step 1"):
            Trainer(make_model(tiny_store.meta, cls=LastUpdateNan), cfg, tiny_store, progress=False).fit()


def test_resuming_a_checkpoint_of_nan_weights_is_refused(tiny_store, tmp_path):
    """A checkpoint of NaN weights (a diverged run's, written before the weights were checked)
    was resumed: it trained on to "loss nan at step N; lower lr", and a resume with a lower lr
    is refused as a changed config. It is refused at once, saying to start afresh."""
    from recnas.errors import CheckpointError
    from recnas.train import load_checkpoint, save_checkpoint

    out, cfg = tmp_path / "run", tiny_cfg(max_steps=2, eval_every=0)
    Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=out, progress=False).fit()
    payload = load_checkpoint(out / "checkpoint.pt")
    payload["model"]["mlp.0.bias"] = torch.full_like(payload["model"]["mlp.0.bias"], float("nan"))
    save_checkpoint(out / "checkpoint.pt", payload)
    resumed = Trainer(make_model(tiny_store.meta), cfg.with_overrides(max_steps=4), tiny_store, out_dir=out, progress=False)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: the weights hold NaN or inf \(mlp\.0\.bias\): the run that wrote it diverged, and resuming it cannot recover; start afresh"):
        resumed.fit(resume=True)


def test_a_batch_norm_model_on_one_row_batches_is_a_config_error(tiny_store):
    """BatchNorm has no batch statistics on one row: a baseline with batch_norm: true at
    batch_size 1 (or on a train split of one row) failed at its first step with torch's traceback."""
    from recnas.baselines import build_baseline

    model = build_baseline("dlrm", tiny_store.meta, bottom_mlp=[8, 4], top_mlp=[8], embed_dim=4, batch_norm=True)
    for over in (dict(batch_size=1), dict(max_train_rows=1)):
        with pytest.raises(ConfigError, match="BatchNorm layers .* need at least 2 rows per training batch"):
            Trainer(model, tiny_cfg(**over), tiny_store, progress=False)
    Trainer(model, tiny_cfg(batch_size=2, max_steps=1), tiny_store, progress=False).fit()  # two rows do
    Trainer(make_model(tiny_store.meta), tiny_cfg(batch_size=1, max_steps=1), tiny_store, progress=False).fit()  # no BatchNorm: one row does


@pytest.mark.parametrize("clip", [None, 0.05])
def test_grad_clip_bounds_the_gradient_norm_of_every_update(tiny_store, clip):
    t = Trainer(make_model(tiny_store.meta), tiny_cfg(max_steps=6, eval_every=0, grad_clip=clip), tiny_store, progress=False)
    norms, step = [], t.scaler.step

    def recording(optimizer):  # the gradients the update is made of, after any clipping
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in t._params if p.grad is not None]))))
        return step(optimizer)

    t.scaler.step = recording
    t.fit()
    assert len(norms) == 6
    if clip is None:
        assert min(norms) > 0.05  # unclipped, every step's gradient is larger than the bound tested
    else:
        assert max(norms) == pytest.approx(clip, rel=1e-5)


@pytest.mark.parametrize("stop_after", [None, 6])
def test_early_stopping_counts_evaluations_without_improvement_in_a_row_also_across_a_resume(tiny_store, tmp_path, stop_after):
    # best at steps 1, 3 and 5: a patience of 2 runs out at step 7, not at step 4 (each improvement
    # restarts the count), and a resume at step 6 goes on with the count and the best weights it kept
    losses = {1: 0.6, 2: 0.7, 3: 0.5, 4: 0.55, 5: 0.4, 6: 0.45, 7: 0.46, 8: 0.47, 9: 0.48, 10: 0.49}
    cfg = tiny_cfg(max_steps=10, eval_every=1, early_stopping_patience=2)
    snaps = {}

    def trainer(seed):
        t = Trainer(make_model(tiny_store.meta, seed=seed), cfg, tiny_store, out_dir=tmp_path, progress=False)

        def fake_eval(*a, **k):
            snaps[t.step] = weights(t.model)
            return {"logloss": losses[t.step], "auc": 0.5, "rows": 60}

        t.evaluate = fake_eval
        return t

    if stop_after is not None:
        trainer(0).fit(stop_after=stop_after)
    t = trainer(3)
    res = t.fit(resume=stop_after is not None)
    assert res.stopped_early and res.steps == 7
    assert res.best_val == {"logloss": 0.4, "auc": 0.5, "step": 5} and res.final_val["logloss"] == 0.46
    assert_same_weights(weights(t.model), snaps[5])  # restore_best: those of step 5, kept in the checkpoint across the resume
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    again = t.fit()  # stopped: trains no further, and leaves its checkpoint (of the last weights) as it is
    assert (again.steps, again.stopped_early, again.final_val["logloss"]) == (7, True, 0.46)
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved
    resumed = trainer(4).fit(resume=True)
    assert (resumed.steps, resumed.best_val["step"], resumed.final_val["logloss"]) == (7, 5, 0.46)


def test_the_last_logged_train_loss_averages_the_steps_since_the_log_before(tiny_store):
    # 12 steps logged every 5: the run's end logs the mean of steps 11 and 12
    t = Trainer(make_model(tiny_store.meta), tiny_cfg(max_steps=12, log_every=5, eval_every=6), tiny_store, progress=False)
    losses, step = [], t._train_step

    def recording(batch):
        loss = step(batch)
        losses.append(float(loss))
        return loss

    t._train_step = recording
    res = t.fit()
    assert [h["step"] for h in res.history] == [6, 12]
    assert res.history[0]["train_loss"] == pytest.approx(np.mean(losses[:5]))
    assert res.history[1]["train_loss"] == pytest.approx(np.mean(losses[10:]))


def test_supernet_validation_is_the_mean_over_its_eval_archs(tiny_store):
    t = Trainer(make_model(tiny_store.meta, cls=ToySupernet), tiny_cfg(max_steps=1), tiny_store, sampler=ToySampler(), eval_archs=[2, 4, 8], progress=False)
    each = [t.evaluate(arch=a) for a in (2, 4, 8)]
    assert len({m["logloss"] for m in each}) == 3
    mean = t.evaluate()
    assert mean["logloss"] == pytest.approx(np.mean([m["logloss"] for m in each]))
    assert mean["auc"] == pytest.approx(np.mean([m["auc"] for m in each]))


@pytest.mark.parametrize("max_eval_rows, rows", [(None, 60), (25, 25)])
def test_validation_scores_every_row_of_the_validation_split_up_to_max_eval_rows(tiny_store, max_eval_rows, rows):
    # batches of 16 rows leave a last partial one, which validation keeps (training drops its own)
    t = Trainer(make_model(tiny_store.meta), tiny_cfg(max_steps=1, eval_batch_size=16, max_eval_rows=max_eval_rows), tiny_store, progress=False)
    got, want = t.evaluate(), evaluate(t.model, tiny_store.split("val"), max_rows=max_eval_rows)
    assert got["rows"] == want["rows"] == rows
    assert got["logloss"] == pytest.approx(want["logloss"]) and got["auc"] == pytest.approx(want["auc"])


def test_a_finished_run_resumed_with_evaluation_on_is_evaluated_at_its_last_step(tiny_store, tmp_path):
    Trainer(make_model(tiny_store.meta), tiny_cfg(max_steps=10, eval_every=0), tiny_store, out_dir=tmp_path, progress=False).fit()
    res = Trainer(make_model(tiny_store.meta), tiny_cfg(max_steps=10, eval_every=4), tiny_store, out_dir=tmp_path, progress=False).fit(resume=True)
    assert res.steps == 10 and [h["step"] for h in res.history] == [10] and res.final_val["rows"] == 60
