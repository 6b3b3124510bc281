from pathlib import Path

import numpy as np
import pytest

from recnas.data.loader import BatchLoader
from recnas.data.store import CTRStore, write_store
from recnas.errors import DataError
from tests.conftest import make_tiny_store


def test_store_roundtrip_and_loader_shapes(tiny_store):
    train = tiny_store.split("train")
    assert len(train) == 480 and train.dense.shape == (480, 3) and train.sparse.dtype == np.int32
    batches = list(BatchLoader(train, batch_size=100, seed=1))
    assert [len(b) for b in batches] == [100, 100, 100, 100, 80]
    b = batches[0]
    assert b.dense.dtype.is_floating_point and b.sparse.dtype == __import__("torch").int64 and b.sparse.shape == (100, 4)
    seen = np.concatenate([bb.label.numpy() for bb in batches])
    assert np.isclose(seen.sum(), train.label.sum())


def test_loader_is_deterministic_and_resumable(tiny_store):
    train = tiny_store.split("train")
    full = [b.sparse.clone() for b in BatchLoader(train, 64, seed=3)]
    part = BatchLoader(train, 64, seed=3)
    it = iter(part)
    first = [next(it).sparse.clone() for _ in range(3)]
    state = part.state_dict()
    resumed = BatchLoader(train, 64, seed=99)  # the state holds the seed too
    resumed.load_state_dict(state)
    rest = [b.sparse for b in resumed]
    for a, b in zip(full, first + rest):
        assert (a == b).all()
    assert len(first + rest) == len(full)


def test_existing_store_is_not_overwritten(tmp_path):
    make_tiny_store(tmp_path / "s")
    before = (tmp_path / "s" / "meta.json").read_text()
    with pytest.raises(DataError, match="overwrite"):
        make_tiny_store(tmp_path / "s", rows=300)
    assert (tmp_path / "s" / "meta.json").read_text() == before


def test_missing_or_corrupt_store_is_a_clear_error(tmp_path, tiny_store):
    with pytest.raises(DataError, match="not a prepared recnas dataset"):
        CTRStore(tmp_path / "nothing")
    (tiny_store.dir / "val" / "label.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt"):
        tiny_store.split("val")


def test_sharded_loaders_split_each_global_batch(tiny_store):
    train = tiny_store.split("train")
    whole = [b.dense[:, 0] for b in BatchLoader(train, 64, seed=2)]
    ranks = [list(BatchLoader(train, 32, seed=2, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 480 // 64
    import torch

    for k in range(len(ranks[0])):
        merged = torch.cat([ranks[0][k].dense[:, 0], ranks[1][k].dense[:, 0]])  # unique floats identify rows
        assert torch.equal(merged.sort().values, whole[k].sort().values)


def test_resident_loader_serves_the_same_batches_without_warnings(tmp_path):
    """Resident data is one copy of the memory-mapped split (no read-only-array warning) and
    serves the rows the streaming loader serves (which sorts each batch for locality)."""
    import warnings

    import torch

    train = make_tiny_store(tmp_path / "s").split("train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resident = list(BatchLoader(train, 64, seed=3, resident=True))
    streamed = list(BatchLoader(train, 64, seed=3))
    assert len(resident) == len(streamed) > 1
    for a, b in zip(resident, streamed):
        rows = lambda batch: sorted(map(tuple, torch.cat([batch.dense, batch.sparse.float(), batch.label[:, None]], 1).tolist()))  # noqa: E731
        assert rows(a) == rows(b)


@pytest.mark.parametrize("damage, match", [
    (lambda d: _edit(d / "val" / "label.npy", lambda a: a.__setitem__(0, 5.0)), r"val/label.npy: labels must be 0 or 1, found 5.0"),
    (lambda d: _edit(d / "val" / "sparse.npy", lambda a: a.__setitem__((3, 1), -1)), r"val/sparse.npy: field C2 has ids outside 0..10"),
    (lambda d: _edit(d / "val" / "sparse.npy", lambda a: a.__setitem__((3, 2), 5)), r"field C3 has ids outside 0..4"),
    (lambda d: (d / "val" / "sparse.npy").write_bytes(b""), r"val/sparse.npy: corrupt array file"),
    (lambda d: _edit(d / "val" / "dense.npy", lambda a: a.__setitem__((2, 0), np.nan)), r"val/dense.npy: non-finite"),
])
def test_values_a_model_cannot_use_are_a_clear_error(tmp_path, damage, match):
    """A hand-edited or foreign store used to fail deep in an embedding lookup or a metric."""
    store = make_tiny_store(tmp_path / "s")
    damage(store.dir)
    with pytest.raises(DataError, match=match):
        CTRStore(store.dir).split("val")
    assert len(CTRStore(store.dir).split("train")) == 480  # the other splits still load


def test_corrupt_array_error_without_a_message_names_its_kind(tmp_path, monkeypatch):
    """The message's fallback to the error's kind for an error with no text (`exc or name`) never
    fired: an exception is always true, so the line ended "corrupt array file ()"."""
    store = make_tiny_store(tmp_path / "s")
    monkeypatch.setattr(np, "load", lambda *a, **k: (_ for _ in ()).throw(EOFError()))
    with pytest.raises(DataError, match=r"val/dense.npy: corrupt array file \(EOFError\)$"):
        CTRStore(store.dir).split("val")


def test_store_made_again_while_read_is_refused(tmp_path):
    """A `data prepare --overwrite` swapping in a store of the same shape under a running search:
    its splits, opened as the job needs them, came from either store without a word."""
    reading = make_tiny_store(tmp_path / "s")
    assert len(reading.split("val")) == 60
    alike = {name: reading.split(name) for name in ("train", "val", "test")}
    write_store(reading.dir, alike, reading.meta, overwrite=True)
    assert len(reading.split("train")) == 480  # made again alike (same meta): the same rows, read on
    other = make_tiny_store(tmp_path / "other", seed=1)
    write_store(reading.dir, {name: other.split(name) for name in ("train", "val", "test")}, other.meta, overwrite=True)
    for name in ("train", "val"):  # opened afresh, or opened before: neither is of the meta read
        with pytest.raises(DataError, match=r"s was replaced by another command .* while this one was reading it"):
            reading.split(name)
    assert len(CTRStore(reading.dir).split("train")) == 480  # a new reader reads the new store


def test_row_counts_must_agree_with_meta(tmp_path):
    store = make_tiny_store(tmp_path / "s")
    meta = store.meta.model_copy(update={"rows": {"train": 480, "val": 61, "test": 60}})
    meta.save(store.dir)
    assert len(CTRStore(store.dir).split("train")) == 480
    with pytest.raises(DataError, match=r"val: 60 rows, meta.json says 61"):
        CTRStore(store.dir).split("val")


@pytest.mark.parametrize(
    "update, match",
    [({"rows": {"train": 480, "test": 60}}, r"rows must count each split \(train, val, test\), got test, train"), ({"vocab_sizes": [7, 11, 5]}, "4 cat_names but 3 vocab_sizes")],
)
def test_inconsistent_meta_is_refused_on_load(tmp_path, update, match):
    store = make_tiny_store(tmp_path / "s")
    store.meta.model_copy(update=update).save(store.dir)
    with pytest.raises(DataError, match=r"meta.json: corrupt dataset metadata: " + match):
        CTRStore(store.dir)


def _edit(path, change):
    arr = np.load(path)
    change(arr)
    np.save(path, arr)


@pytest.mark.parametrize("text, match", [("", "Invalid JSON"), ('{"name": "x", "dense_names": [], "cat_names": ["a"], "vocab_sizes": [-1], "rows": {}}', r"key 'vocab_sizes.0': Input should be greater than 0"), ("[1, 2]", "Input should be an object"), ('{"name": "x", "dense_names": [], "cat_names": ["a"], "vocab_sizes": ["a"], "rows": {}}', r"key 'vocab_sizes.0'")])
def test_corrupt_meta_is_one_line(tmp_path, text, match):
    store = make_tiny_store(tmp_path / "s")
    (store.dir / "meta.json").write_text(text)
    with pytest.raises(DataError, match="meta.json: unreadable dataset metadata: .*" + match) as info:
        CTRStore(store.dir)
    assert "\n" not in str(info.value) and "errors.pydantic.dev" not in str(info.value)


def test_a_meta_json_claiming_a_vocabulary_past_int32_is_refused_on_load(tmp_path, monkeypatch, capsys):
    """Ids are stored as int32, so no store has a vocabulary past 2**31; an edited meta.json
    claiming 10**30 ids was taken, and training on it ended in torch's "Overflow when unpacking
    long long" traceback when the model was built."""
    import json

    from tests.test_cli_models import error_line, run

    store = make_tiny_store(tmp_path / "s")
    meta = json.loads((store.dir / "meta.json").read_text())
    meta["vocab_sizes"][0] = 10**30
    (store.dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"meta\.json: unreadable dataset metadata: key 'vocab_sizes\.0': Input should be less than or equal to 2147483648"):
        CTRStore(store.dir)
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", store.dir, "--config", Path(__file__).parents[1] / "configs" / "train-tiny.yaml", "--out", tmp_path / "o")
    assert code == 2 and "vocab_sizes.0" in error_line(err)
    meta["vocab_sizes"][0] = 2**31  # the most hash buckets a store is prepared with: still a store
    (store.dir / "meta.json").write_text(json.dumps(meta))
    assert CTRStore(store.dir).meta.vocab_sizes[0] == 2**31


def test_every_epoch_serves_each_row_once_in_an_order_of_its_own(tiny_store):
    import torch

    train = tiny_store.split("train")
    loader = BatchLoader(train, 64, seed=3)  # 7 batches of 64 rows and a last one of 32
    epochs = [torch.cat([b.dense[:, 0] for b in loader]) for _ in range(3)]  # unique floats identify rows
    rows = torch.from_numpy(np.sort(np.asarray(train.dense[:, 0])))
    assert all(torch.equal(e.sort().values, rows) for e in epochs)
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    assert (loader.epoch, loader.position) == (3, 0)
