"""`recnas.staging`: output folders are replaced whole, and only when they hold a result of their kind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from recnas.data.store import write_store
from recnas.errors import ConfigError, DataError
from recnas.staging import OutputDir, copy_dir, replace_dir
from tests.conftest import make_tiny_store

KIND = OutputDir("test result", "result.json", ConfigError, names=("result.json", "model.pt"))


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _result(out: Path, text: str = "old") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(text)
    (out / "model.pt").write_text(text)
    return out


def test_staged_folder_replaces_the_old_result_whole(tmp_path):
    out = _result(tmp_path / "out")
    with KIND.staged(out, overwrite=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-") and not any(tmp.iterdir())
        (tmp / "result.json").write_text("new")
    assert _tree(tmp_path) == {"out": None, "out/result.json": b"new"}  # the old model.pt went with the old folder


def test_error_mid_run_keeps_the_previous_result_and_no_staging(tmp_path):
    out = _result(tmp_path / "out")
    with pytest.raises(RuntimeError, match="boom"):
        with KIND.staged(out, overwrite=True) as tmp:
            (tmp / "result.json").write_text("half")
            raise RuntimeError("boom")
    assert _tree(tmp_path) == {"out": None, "out/model.pt": b"old", "out/result.json": b"old"}


def test_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    out, new = _result(tmp_path / "out"), _result(tmp_path / ".new", "new")
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("disk full")) if Path(src) == new else real(src, dst))
    with pytest.raises(OSError, match="disk full"):
        replace_dir(new, out)
    assert (out / "result.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [".new", "out"]


def _with(out: Path, name: str, text: str = "mine") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(text)
    return out


def _file(path: Path) -> Path:
    path.write_text("a file")
    return path


@pytest.mark.parametrize("setup, overwrite, message", [
    (lambda d: _result(d / "out"), False, "already exists; pass --overwrite"),
    (lambda d: _with(_result(d / "out"), "notes.txt"), True, r"holds model.pt, notes.txt, result.json but is not a test result \(notes.txt is not part of one\)"),
    (lambda d: _with(d / "out", "model.pt"), True, r"holds model.pt but is not a test result \(no result.json\)"),
    (lambda d: _file(d / "out"), True, "exists and is not a directory"),
    (lambda d: _file(d / "f") / "out", True, "f is not a directory"),
    (lambda d: _result(d / "out") / "sub", False, r"--out .*sub is inside the test result .*out; choose an --out outside it"),
    (lambda d: _result(d / "out") / "a" / "b", True, "is inside the test result"),  # deeper, parents not made yet
])
def test_only_missing_empty_or_own_results_are_replaced(tmp_path, setup, overwrite, message):
    out = setup(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match=message):
        with KIND.staged(out, overwrite=overwrite) as tmp:
            (tmp / "result.json").write_text("new")
    assert _tree(tmp_path) == before  # nothing deleted, no staging folder left


def test_missing_or_empty_folder_needs_no_overwrite(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        with KIND.staged(out, overwrite=False) as tmp:
            (tmp / "result.json").write_text("x")
        assert _tree(out) == {"result.json": b"x"}


def test_result_appearing_during_the_run_is_not_replaced_without_overwrite(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="already exists"):
        with KIND.staged(out, overwrite=False) as tmp:
            _result(out, "another run's")
            (tmp / "result.json").write_text("new")
    assert (out / "result.json").read_text() == "another run's" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_store_holding_other_files_is_not_overwritten(tmp_path):
    """--overwrite deletes the store folder: a file the store never holds (notes, a raw file) is refused."""
    store = make_tiny_store(tmp_path / "s")
    (tmp_path / "s" / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    with pytest.raises(DataError, match=r"not a recnas store \(notes.txt is not part of one\)"):
        write_store(tmp_path / "s", {s: store.split(s) for s in ("train", "val", "test")}, store.meta, overwrite=True)
    assert _tree(tmp_path) == before


def test_store_inside_a_store_is_refused_both_ways(tmp_path):
    """A nested store made an outer --overwrite delete it with the outer one (or fail on its name)."""
    store = make_tiny_store(tmp_path / "s", rows=50)
    splits = {s: store.split(s) for s in ("train", "val", "test")}
    for inner in (tmp_path / "s" / "sub", tmp_path / "s" / "train" / "sub"):
        with pytest.raises(DataError, match="is inside the recnas store"):
            write_store(inner, splits, store.meta)
    make_tiny_store(tmp_path / "t", rows=50)
    os.rename(tmp_path / "t", tmp_path / "s" / "train" / "t")  # nested before nesting was refused
    before = _tree(tmp_path)
    with pytest.raises(DataError, match=r"holds another recnas store, .*train/t; refusing to replace it"):
        write_store(tmp_path / "s", splits, store.meta, overwrite=True)
    assert _tree(tmp_path) == before


def test_leftovers_of_a_hard_killed_run_are_removed_and_nothing_else(tmp_path):
    """A SIGKILL mid-run leaves `.out.tmp-*` / `.out.old-*` folders that no cleanup ever reached."""
    _result(tmp_path / "out")
    stale = [_with(tmp_path / ".out.tmp-0123abcd", "model.pt"), _with(tmp_path / ".out.old-89abcdef", "result.json")]
    kept = [
        _with(tmp_path / ".out.tmp-0123abc", "x"),  # not the exact pattern
        _with(tmp_path / ".out.tmp-0123ABCD", "x"),
        _with(tmp_path / ".out.tmp-0123abcd.bak", "x"),
        _with(tmp_path / ".other.tmp-0123abcd", "x"),  # another output's
        _with(tmp_path / ".hidden", "x"),
        _file(tmp_path / ".out.tmp-aaaaaaaa"),  # a file, not a staging folder
    ]
    (tmp_path / ".out.old-bbbbbbbb").symlink_to(kept[-2], target_is_directory=True)  # a link is never followed or removed
    with KIND.staged(tmp_path / "out", overwrite=True) as tmp:
        assert tmp.exists() and not any(p.exists() for p in stale)
        (tmp / "result.json").write_text("new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["out", ".out.old-bbbbbbbb", *(p.name for p in kept)]) and (kept[-2] / "x").read_text() == "mine"


def test_copy_dir_is_whole_or_nothing(tmp_path, monkeypatch):
    """best/ = a copy of the chosen finalist: a failed copy keeps the old one, a finished one holds nothing else."""
    src = _with(_with(tmp_path / "src", "model.pt", "new model"), "metrics.json", "new")
    dst = _with(_with(tmp_path / "best", "model.pt", "old model"), "stale.pt", "old")
    real = shutil.copyfile
    calls = []

    def second_copy_fails(a, b, **kw):
        calls.append(a)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(a, b, **kw)

    monkeypatch.setattr(shutil, "copyfile", second_copy_fails)  # what copytree's copy2 calls per file
    with pytest.raises(OSError, match="disk full"):
        copy_dir(src, dst)
    assert _tree(dst) == {"model.pt": b"old model", "stale.pt": b"old"} and sorted(p.name for p in tmp_path.iterdir()) == ["best", "src"]
    monkeypatch.undo()
    copy_dir(src, dst)
    assert _tree(dst) == _tree(src) and sorted(p.name for p in tmp_path.iterdir()) == ["best", "src"]
