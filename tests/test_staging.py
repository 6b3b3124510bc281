"""`recnas.staging`: output folders are replaced whole, and only when they hold a result of their kind."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from recnas.data.store import write_store
from recnas.errors import ConfigError, DataError
from recnas.staging import OutputDir, copy_dir, exclusive, lock_path, remove_stale_writes, replace_dir
from tests.conftest import locked_elsewhere, make_tiny_store

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


@pytest.mark.parametrize("spell", [str, Path])
def test_full_disk_names_the_output_however_it_is_spelled(tmp_path, spell):
    """An `out` given as a str (the Python API: write_store, run_search) ended a failed write
    into the staging folder with "TypeError: unsupported operand type(s) for /" instead of the
    one-line error; now a str and a Path give the same message, and the old result stands."""
    out = _result(tmp_path / "out")
    with pytest.raises(ConfigError, match=r"out: cannot write the test result \(result.json: No space left on device\); the test result there is kept"):
        with KIND.staged(spell(out), overwrite=True) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "result.json"))
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


def test_out_dot_is_staged_beside_the_current_folder(tmp_path, monkeypatch):
    """`--out .` (an empty current folder) staged into `./..tmp-*`, inside itself: the finished
    run was then refused ("holds ..tmp-*"), its work lost. Now it is staged by the folder's name."""
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with KIND.staged(Path("."), overwrite=False) as tmp:
        assert tmp.parent == tmp_path
        (tmp / "result.json").write_text("new")
    assert _tree(tmp_path) == {"here": None, "here/result.json": b"new"}


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


def test_outputs_of_other_kinds_are_refused_at_or_inside_a_result(tmp_path):
    """A run's files (or a raw file) written into a store made that store unreplaceable."""
    out = _result(tmp_path / "out")
    for path, where in ((out, "is"), (out / "run", "is inside"), (out / "a" / "model.pt", "is inside")):
        with pytest.raises(DataError, match=rf"^--x {path} {where} the test result {out}; choose a --x outside it"):
            KIND.check_outside(path, "--x", DataError)
    KIND.check_outside(tmp_path / "elsewhere" / "run", "--x")  # anywhere else: allowed
    _with(out, "notes.txt")  # no result (its --overwrite is refused anyway): a stray marker does not count
    KIND.check_outside(out / "run", "--x")
    assert not (out / "run").exists() and not (tmp_path / "elsewhere").exists()


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


def test_sweep_passes_by_outputs_that_live_runs_hold_inside(tmp_path):
    """A search re-run sweeps its folder of hard-killed writes; a training run or a study's
    cache inside it, held by another live run, lost the temp file it was writing (that run then
    failed), while the same names of a killed run there are still removed."""
    run = tmp_path / "run"
    live = [run / "retrain" / ".checkpoint.pt.tmp-0123abcd", run / ".scratch_cache.json.tmp-89abcdef"]
    stale = [run / "old" / ".checkpoint.pt.tmp-0123abcd", run / ".results.json.tmp-00ff00ff"]
    for p in live + stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    lock_path(run / "old").write_bytes(b"")  # left by a killed run: no one holds it
    with locked_elsewhere(run / "retrain"), locked_elsewhere(run / "scratch_cache.json"):
        assert sorted(remove_stale_writes(run)) == sorted(stale)
    assert all(p.exists() for p in live) and not any(p.exists() for p in stale)


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


def test_a_second_run_on_a_locked_output_is_refused_and_changes_nothing(tmp_path):
    """Two runs on one --out would remove each other's staging folders: the second is refused
    at once, before it stages anything, and the first finishes as if alone."""
    out = _result(tmp_path / "out")
    staged, finish = threading.Event(), threading.Event()

    def first_run():
        with KIND.staged(out, overwrite=True) as tmp:
            (tmp / "result.json").write_text("first")
            staged.set()
            finish.wait(30)

    first = threading.Thread(target=first_run)
    first.start()
    assert staged.wait(10)
    during = _tree(tmp_path)
    with pytest.raises(ConfigError, match=r"--out .*out is being written by another recnas run \(lock .*\.out\.lock\)"):
        with KIND.staged(out, overwrite=True):
            pytest.fail("the second run must not start")
    assert _tree(tmp_path) == during  # the first run's staging folder is still there, untouched
    finish.set()
    first.join(10)
    assert _tree(tmp_path) == {"out": None, "out/result.json": b"first"}  # and no lock file is left


def test_a_thread_may_retake_its_own_lock(tmp_path):
    """A job holding its run folder's lock writes stores inside it; the same thread taking a
    lock it holds is a no-op, and the lock is released only by the outer block."""
    out = tmp_path / "out"
    with exclusive(out):
        with exclusive(out):
            pass
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_one_lock_for_every_spelling_of_an_output(tmp_path, monkeypatch):
    """`out`, `./out`, `sub/../out` and a link to `out` are one output, so one lock."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out", target_is_directory=True)
    assert {lock_path(p) for p in ("out", "./out", "sub/../out", tmp_path / "link")} == {tmp_path / ".out.lock"}
    assert lock_path(".") == tmp_path.parent / f".{tmp_path.name}.lock"


def test_lock_of_a_killed_process_does_not_stick(tmp_path):
    """The lock is an OS lock: a SIGKILLed holder releases it (its lock file stays behind, and
    the next run takes, then removes it)."""
    out = tmp_path / "out"
    code = f"import sys, time; from recnas.staging import exclusive\nwith exclusive({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="being written by another recnas run"):
            with exclusive(out):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).exists()  # what the killed holder left
    with exclusive(out):
        pass
    assert not lock_path(out).exists()


def test_waiting_lock_is_taken_once_the_holder_releases(tmp_path):
    """`wait=True` (the shared scratch cache's writes) blocks instead of failing."""
    path, order = tmp_path / "cache.json", []
    def wait_for_lock():
        with exclusive(path, "cache", wait=True, waiting=lambda: order.append("waiting")):
            order.append("waiter")

    with exclusive(path, "cache"):
        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and order == ["waiting"]  # still blocked while held, and said so
        order.append("holder released")
    waiter.join(10)
    assert order == ["waiting", "holder released", "waiter"]
    wait_for_lock()  # free: no wait to announce
    assert order[3:] == ["waiter"]


def test_the_folders_made_for_a_lock_go_again_when_the_run_leaves_them_empty(tmp_path):
    """A job refused after taking its lock (a bad --data) left the empty folders it made for
    the lock file: they are removed, but a folder that was there, or one the run wrote into, stays."""
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataError):
        with exclusive(tmp_path / "kept" / "new" / "deeper" / "run"):
            assert (tmp_path / "kept" / "new" / "deeper").is_dir()
            raise DataError("refused")
    assert _tree(tmp_path) == {"kept": None}
    with exclusive(tmp_path / "kept" / "new" / "run"):
        (tmp_path / "kept" / "new" / "run").mkdir()
    assert _tree(tmp_path) == {"kept": None, "kept/new": None, "kept/new/run": None}


def test_temp_sibling_names_and_named_os_error_by_hand():
    """temp_sibling: `.NAME.TAG-` and 8 lowercase hex digits beside the path. named_os_error:
    an error naming a file is returned as it is; polars's "(os error N)" gives errno N; numpy's
    short write says what it means; the path is named in every case."""
    from recnas.staging import named_os_error, temp_sibling

    name = temp_sibling(Path("a") / "out", "old").name
    assert name.startswith(".out.old-") and len(name) == len(".out.old-") + 8 and all(c in "0123456789abcdef" for c in name[-8:])
    assert temp_sibling(Path("a") / "out").parent == Path("a") and temp_sibling("x").name.startswith(".x.tmp-")
    named = OSError(errno.ENOSPC, "No space left on device", "elsewhere")
    assert named_os_error(named, "mine") is named
    polars = named_os_error(OSError("File too large (os error 27)"), "f.parquet")
    assert (polars.errno, polars.strerror, polars.filename) == (27, "File too large", "f.parquet")
    numpy = named_os_error(OSError("4000 requested and 224 written"), "d.npy")
    assert numpy.errno is None and numpy.filename == "d.npy"
    assert numpy.strerror == "4000 requested and 224 written (a short write: the disk is full or a file size limit was reached)"


def test_close_each_closes_all_and_returns_the_first_failure():
    """close_each closes every handle even after failures and returns the first failure (naming
    its file), not the last; None when all closed."""
    from recnas.staging import close_each

    closed = []

    class Handle:
        def __init__(self, name, fails):
            self.name, self.fails = name, fails

        def close(self):
            closed.append(self.name)
            if self.fails:
                raise OSError(errno.ENOSPC, "No space left on device")

    first = close_each([Handle("a", False), Handle("b", True), Handle("c", True)])
    assert closed == ["a", "b", "c"] and first.filename == "b"
    assert close_each([Handle("d", False)]) is None


def test_leftover_links_and_old_named_files_are_never_swept(tmp_path):
    """remove_leftovers reports (and removes) only real folders, never a link named like one;
    remove_stale_writes removes temp files (`.NAME.tmp-`) but not a file named `.NAME.old-`,
    which no write of recnas leaves."""
    from recnas.staging import remove_leftovers

    _with(tmp_path / "target", "x")
    (tmp_path / ".out.tmp-0123abcd").symlink_to(tmp_path / "target", target_is_directory=True)
    stale = _with(tmp_path / ".out.old-89abcdef", "x")
    assert remove_leftovers(tmp_path / "out") == [stale]
    assert (tmp_path / ".out.tmp-0123abcd").is_symlink() and (tmp_path / "target" / "x").exists()
    run = tmp_path / "run"
    run.mkdir()
    temp, other = _file(run / ".a.json.tmp-0123abcd"), _file(run / ".a.json.old-0123abcd")
    assert remove_stale_writes(run) == [temp] and other.exists() and not temp.exists()


def test_check_output_dir_and_check_writable_by_hand(tmp_path):
    """check_output_dir refuses an --out that is a file; check_writable leaves no probe file behind
    and refuses a file it writes that is a directory."""
    from recnas.staging import check_output_dir, check_writable

    with pytest.raises(ConfigError, match=r"--out .*f exists and is not a directory"):
        check_output_dir(_file(tmp_path / "f"))
    check_output_dir(tmp_path / "new" / "run")
    run = tmp_path / "run"
    run.mkdir()
    check_writable(run, files=("a.json",), folders=("best",))
    assert list(run.iterdir()) == []
    (run / "a.json").mkdir()
    with pytest.raises(ConfigError, match=r"a.json is a directory, where the run writes its a.json file"):
        check_writable(run, files=("a.json",))


def test_a_lock_released_is_taken_again_for_real(tmp_path):
    """After an `exclusive` block the thread no longer counts the lock as held: a second block
    takes the lock file again (the re-entrant shortcut is for nested blocks only)."""
    out = tmp_path / "out"
    with exclusive(out):
        pass
    assert not lock_path(out).exists()
    with exclusive(out):
        assert lock_path(out).exists()


def test_refusal_lists_five_names_then_a_count_and_agrees_in_number(tmp_path):
    """OutputDir.check's refusal shows the first five names and how many more; "is" for one
    foreign name, "are" for several."""
    out = tmp_path / "out"
    for name in "abcdefg":
        _with(out, name)
    with pytest.raises(ConfigError, match=r"holds a, b, c, d, e and 2 more but is not a test result \(no result.json\)"):
        KIND.check(out, overwrite=True)
    two = _with(_with(_result(tmp_path / "two"), "x"), "y")
    with pytest.raises(ConfigError, match=r"\(x, y are not part of one\)"):
        KIND.check(two, overwrite=True)


def test_a_link_as_out_is_written_through_to_its_target(tmp_path):
    """OutputDir.staged on an --out that is a link replaces the folder it points to and keeps
    the link, with nothing left beside either."""
    target = _result(tmp_path / "target")
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    with KIND.staged(link, overwrite=True) as tmp:
        (tmp / "result.json").write_text("new")
    assert link.is_symlink() and (target / "result.json").read_text() == "new" and not (target / "model.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]


def test_a_full_disk_naming_no_file_is_the_kinds_error(tmp_path):
    """An ENOSPC naming no file inside the staged block (a writer's own error) becomes one error
    naming --out, the staging folder removed."""
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"out: cannot write the test result \(No space left on device\); nothing was written there"):
        with KIND.staged(out, overwrite=False):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_replace_dir_over_a_link_or_a_dangling_link(tmp_path):
    """replace_dir puts the new folder where a link to a folder was (the link moved aside and
    removed, its target untouched), and where a dangling link was."""
    target = _with(tmp_path / "target", "x")
    for final in (tmp_path / "live", tmp_path / "dangling"):
        final.symlink_to(target if final.name == "live" else tmp_path / "gone", target_is_directory=True)
        staging = _with(tmp_path / f".{final.name}.tmp-0123abcd", "new")
        replace_dir(staging, final)
        assert final.is_dir() and not final.is_symlink() and (final / "new").exists()
    assert (target / "x").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "live", "target"]


def test_a_failed_copy_names_the_file_at_its_place_in_the_destination(tmp_path, monkeypatch):
    """copy_dir: a copy failing on a file in a subfolder is an OSError naming that file in
    `dst` (dst/sub/b.txt), not the hidden staging folder or the bare file name."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    real = shutil.copyfile

    def fail_on_b(a, b, **kw):
        if Path(a).name == "b.txt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(a, b, **kw)

    monkeypatch.setattr(shutil, "copyfile", fail_on_b)
    with pytest.raises(OSError) as err:
        copy_dir(src, tmp_path / "dst")
    assert err.value.filename == str(tmp_path / "dst" / "sub" / "b.txt") and err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
