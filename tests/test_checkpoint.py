"""Checkpoint files: round trip, atomicity, corrupt and mismatched files, model rebuilding."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch

from recnas.errors import CheckpointError, DataError
from recnas.train import TrainConfig, Trainer, load_checkpoint, save_checkpoint
from recnas.train import checkpoint as ckpt_mod
from recnas.train import model_factory
from recnas.train.checkpoint import rng_state, set_rng_state
from recnas.data.store import CTRStore
from tests.conftest import make_tiny_store
from tests.test_trainer import make_model, tiny_cfg

SPEC = {"kind": "toy"}


def trained_run(store, out, **model_kw):
    t = Trainer(make_model(store.meta, **model_kw), tiny_cfg(epochs=1), store, out_dir=out, progress=False, model_spec=SPEC)
    t.fit()
    return t


def test_roundtrip_only_plain_types(tmp_path):
    path = tmp_path / "c.pt"
    payload = {"model": {"w": torch.arange(3.0)}, "model_spec": {"kind": "x", "dims": [1, 2]}, "rng": rng_state(), "none": None}
    save_checkpoint(path, payload)
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], torch.arange(3.0)) and back["model_spec"] == {"kind": "x", "dims": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_rng_state_restores_every_generator():
    random.gauss(0, 1)  # draws two normals and keeps the second for the next call: part of the state
    np.random.randn()  # numpy's legacy normals likewise
    state = rng_state()
    a = (torch.rand(3), np.random.randn(3), random.random(), random.gauss(0, 1))
    set_rng_state(state)
    b = (torch.rand(3), np.random.randn(3), random.random(), random.gauss(0, 1))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


@pytest.mark.parametrize("missing", ["model", "model_spec"])
def test_a_payload_load_checkpoint_would_refuse_is_not_written(tmp_path, missing):
    payload = {"model": {}, "model_spec": {}}
    del payload[missing]
    with pytest.raises(ValueError, match=f"lacks '{missing}'"):
        save_checkpoint(tmp_path / "c.pt", payload)
    assert not (tmp_path / "c.pt").exists()


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {}, "model_spec": {"v": 1}})
    good = path.read_bytes()

    def exploding_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": {}, "model_spec": {"v": 2}})
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not-recnas"])
def test_corrupt_checkpoint_is_refused_and_left_unchanged(tiny_store, tmp_path, damage):
    out = tmp_path / "run"
    trained_run(tiny_store, out)
    path = out / "checkpoint.pt"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    else:
        torch.save({"model": {}}, path)
    bad = path.read_bytes()
    with pytest.raises(CheckpointError, match=str(path).replace("\\", "\\\\") + ".*(corrupt|not a recnas)"):
        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit(resume=True)
    assert path.read_bytes() == bad


def test_unreadable_checkpoint_messages_say_what_is_wrong(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match="not a complete PyTorch zip archive"):
        load_checkpoint(path)
    torch.save({"format": "recnas-checkpoint", "obj": argparse.Namespace(a=1)}, path)  # a pickle that needs code to load
    with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint") as err:
        load_checkpoint(path)
    # torch's advice on how to load it anyway (running the file's code) is not passed on
    assert "weights_only" not in str(err.value) and "can still be loaded" not in str(err.value)


def test_a_run_folder_given_as_checkpoint_names_its_files(tmp_path):
    """`--ckpt runs/x` (the run folder, not its model.pt) said "checkpoint not found" about a
    folder that is there."""
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match=r"run: is a folder, not a checkpoint file; give the model.pt or checkpoint.pt of a training run"):
        load_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "model.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"run: is a folder, not a checkpoint file; give a file of it, e.g. .*run/model.pt"):
        load_checkpoint(tmp_path / "run")


def test_mismatched_model_shape_is_refused(tiny_store, tmp_path):
    out = tmp_path / "run"
    trained_run(tiny_store, out)
    before = (out / "checkpoint.pt").read_bytes()
    other = Trainer(make_model(tiny_store.meta, hidden=5), tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False, model_spec=SPEC)
    with pytest.raises(CheckpointError, match=r"does not match the model.*mlp\.0\.weight: checkpoint \(8, 19\) vs model \(5, 19\)"):
        other.fit(resume=True)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_mismatched_spec_config_or_missing_file_is_refused(tiny_store, tmp_path):
    out = tmp_path / "run"
    trained_run(tiny_store, out)
    with pytest.raises(CheckpointError, match="model_spec differs in: kind"):
        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False, model_spec={"kind": "other"}).fit(resume=True)
    with pytest.raises(CheckpointError, match="batch_size: 32 -> 16"):
        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1, batch_size=16), tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit(resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        Trainer(make_model(tiny_store.meta), tiny_cfg(), tiny_store, out_dir=tmp_path / "empty", progress=False).fit(resume=True)


@pytest.mark.parametrize("change", [{"lr": 0.5}, {"weight_decay": 0.1}, {"embedding_weight_decay": 0.1}, {"embedding_lr": 0.1}, {"warmup_steps": 3}, {"lr_schedule": "cosine"}, {"grad_clip": 0.5}, {"seed": 1}, {"optimizer": "adagrad"}])
def test_resume_refuses_a_changed_lr_or_weight_decay(tiny_store, tmp_path, change):
    """The optimizer's state holds lr and weight_decay, so a resume used to keep the old values
    while config.yaml (and a search's report) recorded the new ones: refused, not ignored."""
    out = tmp_path / "run"
    t = trained_run(tiny_store, out)
    before = (out / "checkpoint.pt").read_bytes()
    key = next(iter(change))
    cfg = TrainConfig(**{**t.cfg.model_dump(), "max_steps": t.step + 5, **change})
    with pytest.raises(CheckpointError, match=rf"cannot resume with a changed config \({key}: "):
        Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit(resume=True)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_refuses_another_number_of_processes(tiny_store, tmp_path):
    """A run of --nproc 2 resumed in one process (or the reverse) went on silently with another
    global batch: other rows per step, the loader's position read in other batches."""
    out = tmp_path / "run"
    trained_run(tiny_store, out)
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["world_size"] == 1
    save_checkpoint(out / "checkpoint.pt", {**payload, "world_size": 2})  # as an --nproc 2 run writes it
    before = (out / "checkpoint.pt").read_bytes()
    more = Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=2), tiny_store, out_dir=out, progress=False, model_spec=SPEC)
    with pytest.raises(CheckpointError, match=r"trained in 2 processes and would resume in 1; .* resume with --nproc 2"):
        more.fit(resume=True)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_a_finished_run_with_more_steps(tiny_store, tmp_path):
    out = tmp_path / "run"
    t = trained_run(tiny_store, out)
    more = Trainer(make_model(tiny_store.meta), TrainConfig(**{**t.cfg.model_dump(), "max_steps": t.step + 5}), tiny_store, out_dir=out, progress=False, model_spec=SPEC)
    res = more.fit(resume=True)
    assert res.steps == t.step + 5 and len(res.history) == len(t.history) + 1
    before = (out / "checkpoint.pt").read_bytes()
    fewer = Trainer(make_model(tiny_store.meta), TrainConfig(**{**t.cfg.model_dump(), "max_steps": 2}), tiny_store, out_dir=out, progress=False, model_spec=SPEC)
    with pytest.raises(CheckpointError, match=rf"at step {t.step + 5}, past the 2 steps asked for"):  # not silently ignored
        fewer.fit(resume=True)
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("total, planned", [({"max_steps": 10}, 10), ({"epochs": 1}, 15)])
def test_a_resume_to_another_total_says_so(tiny_store, tmp_path, caplog, total, planned):
    """A resume without the --steps a run was started with went to the config's total without a
    word, and with it the rest of a decaying lr schedule; a resume to the same total says nothing.
    The total planned is its max_steps, or its epochs' steps."""
    out = tmp_path / "run"
    cfg = tiny_cfg(lr_schedule="cosine", eval_every=0, **total)
    Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit(stop_after=4)
    with caplog.at_level("INFO", logger="recnas"):
        Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit(resume=True, stop_after=6)
    assert "resuming at step" not in caplog.text
    more = TrainConfig(**{**cfg.model_dump(), "max_steps": 16})
    with caplog.at_level("INFO", logger="recnas"):
        Trainer(make_model(tiny_store.meta), more, tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit(resume=True)
    assert f"resuming at step 6 of 16: the checkpoint's run was to end at step {planned}" in caplog.text and "cosine lr schedule now runs to step 16" in caplog.text


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_a_resume_with_more_steps_trains_its_first_step_at_the_new_schedules_lr(tiny_store, tmp_path, schedule):
    # a finished decaying run ends at lr 0; resumed for more steps, the first step trained at
    # that 0 (the saved optimizer's lr) and the new schedule only took over from the second
    out = tmp_path / "run"
    cfg = tiny_cfg(max_steps=10, lr_schedule=schedule, warmup_steps=2, eval_every=0)
    Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit()
    more = Trainer(make_model(tiny_store.meta), TrainConfig(**{**cfg.model_dump(), "max_steps": 20}), tiny_store, out_dir=out, progress=False, model_spec=SPEC)
    lrs, step = [], more._train_step

    def recording(batch):
        lrs.append(more.optimizer.param_groups[0]["lr"])
        return step(batch)

    more._train_step = recording
    more.fit(resume=True)
    from recnas.train.plan import lr_factor

    assert lrs == pytest.approx([cfg.lr * lr_factor(s, 2, 20, schedule) for s in range(10, 20)])
    assert lrs[0] > 0


def test_resume_under_another_restore_best_never_ends_with_weights_of_another_step(tiny_store, tmp_path):
    def run(out, restore_best, steps, init=0):
        cfg = tiny_cfg(max_steps=steps, eval_every=5, restore_best=restore_best)
        t = Trainer(make_model(tiny_store.meta, seed=init), cfg, tiny_store, out_dir=out, progress=False, model_spec=SPEC)
        return t, t.fit(resume=(out / "checkpoint.pt").exists())

    # restore_best: false kept no best weights; resumed under true, a run whose best evaluation
    # came before the resume ended with its last weights, reported as the best ones
    out = tmp_path / "kept-none"
    run(out, False, 10)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"trained with restore_best: false and kept no weights of its best evaluation \(step \d+\); resume it with restore_best: false"):
        run(out, True, 20)
    assert (out / "checkpoint.pt").read_bytes() == before
    # true, then false: the best weights of the first part stayed in the checkpoint while the
    # best evaluation moved on, and a third part under true restored those stale weights
    out = tmp_path / "stale"
    run(out, True, 10)
    t, res = run(out, False, 20)
    assert load_checkpoint(out / "checkpoint.pt")["best_model"] is None
    with pytest.raises(CheckpointError, match="restore_best: false"):
        run(out, True, 30)


def test_resume_refuses_other_validation_rows_once_it_has_evaluated(tiny_store, tmp_path):
    # the best evaluation, which every later one is compared with (restore_best, early
    # stopping), was of 20 rows; resumed on all 60, the comparison went on silently
    def run(out, steps, **kw):
        cfg = tiny_cfg(max_steps=steps, eval_every=5, **kw)
        return Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit(resume=(out / "checkpoint.pt").exists())

    out = tmp_path / "run"
    run(out, 10, max_eval_rows=20)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"max_eval_rows: 20 -> None\): the run's evaluations were on 20 validation rows, this one's would be on 60"):
        run(out, 20)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert run(out, 20, max_eval_rows=20).steps == 20
    # a cap past the split's rows is all of them: no change
    whole = tmp_path / "whole"
    run(whole, 10)
    assert run(whole, 20, max_eval_rows=10_000).steps == 20
    # a run that never evaluated has nothing to compare
    quiet = tmp_path / "quiet"
    Trainer(make_model(tiny_store.meta), tiny_cfg(max_steps=10, eval_every=0, max_eval_rows=20), tiny_store, out_dir=quiet, progress=False, model_spec=SPEC).fit()
    assert run(quiet, 20).steps == 20


def test_a_max_train_rows_past_the_split_is_no_change_on_resume(tiny_store, tmp_path):
    # 480 training rows: a cap of 10,000 trains on all of them, as none does (it was refused as
    # a changed config); a cap that drops rows still is
    def run(steps, **kw):
        cfg = tiny_cfg(max_steps=steps, eval_every=0, **kw)
        return Trainer(make_model(tiny_store.meta), cfg, tiny_store, out_dir=tmp_path / "run", progress=False, model_spec=SPEC).fit(resume=(tmp_path / "run" / "checkpoint.pt").exists())

    run(10, max_train_rows=10_000)
    assert run(20).steps == 20
    assert run(30, max_train_rows=480).steps == 30
    with pytest.raises(CheckpointError, match=r"cannot resume with a changed config \(max_train_rows: 480 -> 100\)"):
        run(40, max_train_rows=100)


def test_load_trained_rebuilds_from_spec(tiny_store, tmp_path, monkeypatch):
    spec = model_factory.baseline_spec("toy", {"hidden": 8, "dims": (1, 2)}, tiny_store.meta)
    assert spec["hparams"]["dims"] == [1, 2]  # plain JSON form, equal to itself after a round trip
    built = []

    def fake_build(s, meta=None):
        built.append((s, meta))
        return make_model(model_factory.meta_from_spec(s), seed=7)

    monkeypatch.setattr(model_factory, "build_model", fake_build)
    out = tmp_path / "run"
    t = Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False, model_spec=spec)
    t.fit()
    model, got_spec, extra = model_factory.load_trained(out / "model.pt")
    assert got_spec == spec and built[0][0] == spec and extra["step"] == t.step and extra["config"]["batch_size"] == 32
    for k, v in t.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_spec_data_must_match_dataset(tiny_store, tmp_path):
    spec = model_factory.baseline_spec("lr", {}, tiny_store.meta)
    other = make_tiny_store(tmp_path / "other", vocab_sizes=(7, 11, 5, 10))
    with pytest.raises(DataError, match=r"vocab sizes \[7, 11, 5, 9\].*\[7, 11, 5, 10\]"):
        model_factory.check_data(spec, other.meta)
    with pytest.raises(CheckpointError, match="unknown model kind"):
        model_factory.build_model({"kind": "nope"})


def test_checkpoint_without_spec_cannot_be_rebuilt(tiny_store, tmp_path):
    out = tmp_path / "run"
    Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False).fit()
    with pytest.raises(CheckpointError, match="no usable model_spec"):
        model_factory.load_trained(out / "model.pt")


def test_sampler_presence_must_match(tiny_store, tmp_path):
    from tests.test_trainer import ToySampler, ToySupernet

    out = tmp_path / "run"
    Trainer(make_model(tiny_store.meta, cls=ToySupernet), tiny_cfg(epochs=1), tiny_store, out_dir=out, sampler=ToySampler(), progress=False, model_spec=SPEC).fit()
    with pytest.raises(CheckpointError, match="trained with an architecture sampler"):
        Trainer(make_model(tiny_store.meta, cls=ToySupernet), tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit(resume=True)


@pytest.mark.parametrize("edit, match", [
    (lambda p: p["model_spec"].pop("name"), r"model_spec is invalid \(KeyError: 'name'\)"),
    (lambda p: p["model_spec"].update(hparams=[1]), r"model_spec is invalid \(TypeError: .*mapping"),
    (lambda p: p["model_spec"].update(data={"n_dense": 1}), r"model_spec is invalid \(KeyError: 'vocab_sizes'\)"),
    (lambda p: p["model_spec"].update(kind="subnet", space={"zzz": 1}, arch="{}"), r"model_spec is invalid \(unknown key 'zzz'\)"),
    (lambda p: p["model_spec"].update(kind="subnet", space={"n_blocks": 0, "emb_dim": "x"}, arch="{}"),
     r"model_spec is invalid \(key 'n_blocks': .*greater than or equal to 1 \(got 0\); key 'emb_dim': .*integer.* \(got 'x'\)\)"),
    (lambda p: p.update(model=[1, 2]), r"weights are not a state dict of named tensors \(got list\)"),
    (lambda p: p["model"].update({"extra.weight": torch.zeros(1)}), r"weights do not fit the model its model_spec describes \(unexpected keys extra\.weight\)"),
    (lambda p: p.update(version=0), r"checkpoint format version 0, this recnas reads 1"),
    (lambda p: p.pop("model"), r"checkpoint lacks 'model'"),
    (lambda p: p.pop("model_spec"), r"checkpoint lacks 'model_spec'"),
])
def test_hand_edited_checkpoint_is_refused_in_one_line(tiny_store, tmp_path, edit, match):
    """A model_spec or weights edited by hand (or from another tool) is a CheckpointError, not a traceback."""
    from recnas.baselines import build_baseline

    out = tmp_path / "run"
    model = build_baseline("lr", tiny_store.meta)
    Trainer(model, tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False, model_spec=model_factory.baseline_spec("lr", model.hparams, tiny_store.meta)).fit()
    payload = torch.load(out / "model.pt", weights_only=False)
    edit(payload)
    torch.save(payload, out / "edited.pt")
    with pytest.raises(CheckpointError, match=match) as info:
        model_factory.load_trained(out / "edited.pt")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("edit", [lambda p: p.update(optimizer="x"), lambda p: p.update(rng={"torch": 1})])
def test_resume_refuses_hand_edited_training_state(tiny_store, tmp_path, edit):
    """Optimizer or RNG state of the wrong type raised AttributeError deep in torch."""
    out = tmp_path / "run"
    trained_run(tiny_store, out)
    payload = torch.load(out / "checkpoint.pt", weights_only=False)
    edit(payload)
    torch.save(payload, out / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="checkpoint state does not fit this run"):
        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False, model_spec=SPEC).fit(resume=True)


def test_resume_on_another_dataset_of_the_same_shape_is_refused(tmp_path):
    """The checkpoint's model spec holds only the data's shape (dense width, vocabulary sizes):
    a run resumed with --data of another store of that shape went on silently, its first steps
    trained on one dataset and the rest on the other. A copy of the same store resumes."""
    import shutil

    first = make_tiny_store(tmp_path / "a", seed=0)
    other = make_tiny_store(tmp_path / "b", seed=1)  # same shape and sizes, other rows
    out = tmp_path / "run"
    t = trained_run(first, out)
    before = (out / "checkpoint.pt").read_bytes()
    more = TrainConfig(**{**t.cfg.model_dump(), "max_steps": t.step + 2})
    with pytest.raises(CheckpointError, match=r"trained on another dataset than .*b \(click rate per split .*\); resume it on the data it was trained on"):
        Trainer(make_model(other.meta), more, other, out_dir=out, progress=False, model_spec=SPEC).fit(resume=True)
    assert (out / "checkpoint.pt").read_bytes() == before
    shutil.copytree(first.dir, tmp_path / "moved")
    moved = CTRStore(tmp_path / "moved")
    assert Trainer(make_model(moved.meta), more, moved, out_dir=out, progress=False, model_spec=SPEC).fit(resume=True).steps == t.step + 2


def test_ctrl_c_in_the_middle_of_a_checkpoint_write_stays_an_interrupt(tmp_path, monkeypatch):
    """Ctrl-C while torch's zip writer is writing: closing it on the way out raised
    "RuntimeError: ... unexpected pos" over the KeyboardInterrupt, so the run printed a traceback
    instead of "interrupted" (seen under --nproc 2 with a checkpoint every step)."""
    import contextlib

    import recnas.train.checkpoint as ckpt

    @contextlib.contextmanager
    def cut_short(path, mode):  # a real file whose third write is where Ctrl-C lands
        with open(path, mode) as fh:
            writes = []

            class Writer:
                def write(self, data):
                    writes.append(len(data))
                    if len(writes) == 3:
                        raise KeyboardInterrupt
                    return fh.write(data)

                def flush(self):
                    fh.flush()

            yield Writer()

    monkeypatch.setattr(ckpt, "atomic_write", cut_short)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path / "checkpoint.pt", {"model": {"weights": torch.randn(1000, 100)}, "model_spec": {}})


def older_layout(path):
    """Rewrite a checkpoint's weights as an older recnas laid the same model out (its first
    subnets had a norm per block where today's have logit heads): same model_spec, other keys."""
    payload = torch.load(path, weights_only=True)
    state = payload["model"]
    name = next(iter(state))
    state[f"blocks.0.norm.{name}"] = state.pop(name)
    payload.pop("layout")  # recorded since 2026-12-07
    torch.save(payload, path)


def test_a_checkpoint_records_its_weights_layout_and_one_of_a_newer_recnas_is_refused(tmp_path):
    """Files record the layout of their weights (checkpoint.LAYOUT), so that one written by a
    newer recnas, whose models may have other weights, is refused as such ("missing keys" and an
    "older recnas" hint, or silently other subnets, was all an older reader could give); a file
    that records none (before 2026-12-07) is read as layout 1."""
    path = save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "model_spec": {}})
    payload = load_checkpoint(path)
    assert payload["layout"] == ckpt_mod.LAYOUT == 2 and ckpt_mod.layout_of(payload) == 2
    raw = torch.load(path, weights_only=True)
    raw.pop("layout")
    torch.save(raw, path)
    assert ckpt_mod.layout_of(load_checkpoint(path)) == 1
    raw["layout"] = ckpt_mod.LAYOUT + 1
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"c\.pt: written by a newer recnas \(weights layout 3; this recnas reads up to 2\): upgrade recnas to read it$"):
        load_checkpoint(path)
    for bad in (0, "2", True, 2.0):
        raw["layout"] = bad
        torch.save(raw, path)
        with pytest.raises(CheckpointError, match=r"weights layout .* is not a positive integer"):
            load_checkpoint(path)


def test_a_supernet_that_records_its_layout_is_never_taken_for_one_of_the_leading_slice(tiny_store, tmp_path):
    """check_supernet_paths tells a pre-2026-12-03 supernet by its config lacking
    embedding_weight_decay; a file that records a weights layout folds its paths whatever its
    config holds, and is read."""
    from recnas.space import get_space

    space = get_space("small-tiny").model_copy(update={"sparse_dims": (2, 4)})  # paths of fewer tokens than the 4 fields fold
    payload = {"model_spec": model_factory.supernet_spec(space, tiny_store.meta), "config": {"lr": 0.01}}
    with pytest.raises(model_factory.SupernetOfOtherPaths):
        model_factory.check_supernet_paths(payload, "sn.pt")
    model_factory.check_supernet_paths({**payload, "layout": 2}, "sn.pt")


def test_weights_of_an_older_recnas_are_named_so_with_the_way_on(tiny_store, tmp_path):
    """A model.pt or checkpoint.pt whose weights do not fit the model its own model_spec
    describes was written by an older recnas (its first days' supernets and subnets): "does not
    match the model" left the user looking for a change of theirs; evaluate and resume say what it
    is and what to do, and leave the file as it was."""
    from recnas.baselines import build_baseline

    out = tmp_path / "run"
    model = build_baseline("lr", tiny_store.meta)
    spec = model_factory.baseline_spec("lr", model.hparams, tiny_store.meta)
    Trainer(model, tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False, model_spec=spec).fit()
    for name in ("model.pt", "checkpoint.pt"):
        older_layout(out / name)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"model\.pt: the checkpoint's weights do not fit the model its model_spec describes \(missing keys .*\): "
                       r"it was written by an older recnas, whose models had other weights, or edited; train the model again with this recnas$"):
        model_factory.load_trained(out / "model.pt")
    again = Trainer(build_baseline("lr", tiny_store.meta), tiny_cfg(epochs=2), tiny_store, out_dir=out, progress=False, model_spec=spec)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: .*written by an older recnas.*; start the run afresh \(--overwrite\)$"):
        again.fit(resume=True)
    assert (out / "checkpoint.pt").read_bytes() == before
    # without a model_spec to hold it to, a clash is only a mismatch: nothing says the model is the same
    bare = Trainer(build_baseline("lr", tiny_store.meta), tiny_cfg(epochs=2), tiny_store, out_dir=out, progress=False)
    with pytest.raises(CheckpointError, match=r"checkpoint does not match the model \(missing keys"):
        bare.fit(resume=True)


def _saved_model(meta, kind: str, path):
    """A model.pt of a `kind` ("dlrm": a baseline, "supernet", "subnet") built for `meta`, as
    load_trained reads it: weights and model_spec alone."""
    from recnas.baselines import build_baseline
    from recnas.space.samplers import random_architecture
    from recnas.supernet import Subnet, Supernet
    from tests.conftest import tiny_space

    space = tiny_space("every-op-tiny")
    if kind == "supernet":
        model, spec = Supernet(space, meta), model_factory.supernet_spec(space, meta, "single-path")
    elif kind == "subnet":
        arch = random_architecture(np.random.default_rng(0), space, any_ops=True)
        model, spec = Subnet.from_architecture(arch, space, meta), model_factory.subnet_spec(arch, space, meta)
    else:
        model = build_baseline(kind, meta)
        spec = model_factory.baseline_spec(kind, model.hparams, meta)
    save_checkpoint(path, {"model": model.state_dict(), "model_spec": spec})
    return spec


@pytest.mark.parametrize("kind", ["dlrm", "supernet", "subnet"])
def test_a_spec_claiming_huge_tables_is_refused_before_any_is_allocated(tiny_store, tmp_path, kind):
    """A model_spec edited to claim a vocabulary of 2**31 ids (the most a store holds), beside a
    few kilobytes of weights: the model was built (tens of gigabytes of tables) before its weights were checked,
    "out of memory" at best, or gigabytes allocated and initialised for a file that is refused
    anyway. Its weights are checked against the model built on the meta device first."""
    _saved_model(tiny_store.meta, kind, tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["model_spec"]["data"]["vocab_sizes"][0] = 2**31
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ckpt_mod.OtherLayoutCheckpoint, match=r"edited\.pt: the checkpoint's weights do not fit the model its model_spec describes \(shape mismatch .*21474836"):
        model_factory.load_trained(tmp_path / "edited.pt")


@pytest.mark.parametrize("kind", ["dlrm", "supernet", "subnet"])
def test_a_file_whose_weights_cover_its_ids_is_built_once(tiny_store, tmp_path, kind, monkeypatch):
    """The meta-device check runs each torch call through Python (seconds for a large
    supernet): a file holding at least a weight per id it claims is built once, for real."""
    _saved_model(tiny_store.meta, kind, tmp_path / "model.pt")
    built, build = [], model_factory.build_model
    monkeypatch.setattr(model_factory, "build_model", lambda *a, **kw: built.append(torch.empty(0).is_meta) or build(*a, **kw))
    model_factory.load_trained(tmp_path / "model.pt")
    assert built == [False]
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["model_spec"]["data"]["vocab_sizes"][0] = 2**31
    torch.save(payload, tmp_path / "edited.pt")
    built.clear()
    with pytest.raises(ckpt_mod.OtherLayoutCheckpoint):
        model_factory.load_trained(tmp_path / "edited.pt")
    assert built == [True]  # checked on the meta device, never built for real


@pytest.mark.parametrize("kind", ["dlrm", "supernet", "subnet"])
def test_the_weights_check_before_the_build_leaves_every_rng_as_it_was(tiny_store, tmp_path, kind):
    """The meta-device build that checks a file's weights first draws nothing from any RNG: a
    run that loads a model and trains on (--inherit, a continued search) draws as it did."""
    spec = _saved_model(tiny_store.meta, kind, tmp_path / "model.pt")
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    model_factory.build_model(spec)
    once = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    model, got, _ = model_factory.load_trained(tmp_path / "model.pt")
    assert got == spec
    assert torch.equal(torch.get_rng_state(), once[0]) and (np.random.get_state()[1] == once[1]).all() and random.getstate() == once[2]
    assert not any(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("draw", [lambda: torch.rand(3).tolist(), lambda: np.random.rand(3).tolist(), lambda: [random.random() for _ in range(3)]], ids=["torch", "numpy", "python"])
def test_seed_everything_seeds_every_generator(draw):
    from recnas.train.checkpoint import seed_everything

    seed_everything(7)
    first = draw()
    seed_everything(7)
    assert draw() == first
    seed_everything(8)
    assert draw() != first


def test_a_store_made_again_elsewhere_from_a_moved_file_is_the_same_data_on_resume(tiny_store):
    from recnas.train.resume import data_identity

    source = {"path": "/data/a/train.csv", "sha256": "ab12", "dataset": "criteo", "options": {"split": "stratified", "spec": "/data/a/spec.yaml"}, "vocab_from": {"store": "/data/a/store", "sha256": "ef56"}}
    moved = {**source, "path": "/mnt/b/train.csv", "options": {**source["options"], "spec": "/mnt/b/spec.yaml"}, "vocab_from": {"store": "/mnt/b/store", "sha256": "ef56"}}
    other = {**source, "sha256": "ab13"}
    meta = tiny_store.meta
    ident = [data_identity(meta.model_copy(update={"source": s})) for s in (source, moved, other)]
    assert ident[0] == ident[1] != ident[2]


def test_a_store_with_another_profile_file_is_other_data_on_resume(tiny_store):
    """A KDD12 store prepared with --profile records the profile file's checksum; the data
    identity dropped that whole record with its path, so a store of the same raw file joined
    with another profile file of the same vocabulary sizes passed a resume as the same data.
    The checksum counts now, its path does not (a moved profile file is the same data), and an
    identity recorded without it (2026-12-06..07) is still checked as it was."""
    from types import SimpleNamespace

    from recnas.errors import CheckpointError
    from recnas.train.resume import check_same_data, data_identity

    source = {"path": "/data/a/train.txt", "sha256": "ab12", "dataset": "kdd12", "options": {"split": "sequential"},
              "profile": {"path": "/data/a/userid_profile.txt", "size": 10, "sha256": "cd34", "rows": 6}}
    moved = {**source, "profile": {**source["profile"], "path": "/mnt/b/userid_profile.txt"}}
    other = {**source, "profile": {**source["profile"], "sha256": "cd35"}}
    meta = [tiny_store.meta.model_copy(update={"source": s}) for s in (source, moved, other)]
    ident = [data_identity(m) for m in meta]
    assert ident[0] == ident[1] != ident[2]
    stores = [SimpleNamespace(meta=m, dir="store") for m in meta]  # what check_same_data reads of a CTRStore
    check_same_data("ckpt", ident[0], stores[1], "way on")
    with pytest.raises(CheckpointError, match="another dataset than store .*made from another raw file or with other options\\); way on"):
        check_same_data("ckpt", ident[0], stores[2], "way on")
    # recorded before the checksum counted: checked as then (the profile file unseen), not refused
    before = data_identity(meta[0], before_profile=True)
    assert before != ident[0] and before == data_identity(meta[2], before_profile=True)
    check_same_data("ckpt", before, stores[2], "way on")
    with pytest.raises(CheckpointError, match="another dataset"):  # other rows are other data under either record
        check_same_data("ckpt", before, SimpleNamespace(meta=tiny_store.meta.model_copy(update={"source": {**source, "sha256": "ab13"}}), dir="store"), "way on")
    check_same_data("ckpt", None, stores[2], "way on")  # no record (before 2026-12-06): not checked
