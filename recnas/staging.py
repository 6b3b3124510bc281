"""Output folders written whole: one mechanism for every command that owns its --out folder.

A run writes into a hidden sibling folder (`temp_sibling`) and swaps it in at the end
(`replace_dir`), so a crash, Ctrl-C or error mid-run never leaves a half-written folder and
never destroys the previous good result. Since the swap deletes what the old folder held, an
`OutputDir` only replaces a folder that is missing, empty, or (with --overwrite) a complete
result of its own kind, and refuses anything else with a clear error; nor is an output placed
inside another result of its kind, or any other output (`check_outside`: a training run's
folder, a raw file) inside a data store. Used for prepared data
stores and embedding search results, and (`copy_dir`) a search's best/ folder;
`configs.atomic_write` names its temp files the same way. `exclusive` keeps a second run
off an output folder that a first run is still writing.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: `exclusive` does not lock
    fcntl = None

from recnas.errors import ConfigError, RecnasError

log = logging.getLogger("recnas")
TAG_HEX = 8  # hex digits after the tag in a `temp_sibling` name


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh hidden name beside `path` (`.NAME.TAG-xxxxxxxx`): on the same filesystem, so
    `os.replace` onto `path` is atomic, and hidden, so a listing of the folder skips it."""
    path = Path(path)
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:TAG_HEX]}"


def named_os_error(exc: OSError, path: str | os.PathLike) -> OSError:
    """`exc` naming `path` if it names no file: a failed write (a full disk, a file size limit:
    ENOSPC, EFBIG) said only "File too large", polars's writer only "File too large (os error
    27)" and numpy's "4000 requested and 224 written", with no errno. The CLI prints
    `FILE: reason` from it. Returned as it is when it names a file already."""
    if exc.filename is not None:
        return exc
    code, strerror = exc.errno, exc.strerror
    if code is None:
        found = re.fullmatch(r"(.*?) \(os error (\d+)\)", str(exc).strip(), re.S)
        code, strerror = (int(found[2]), found[1]) if found else (None, str(exc) or type(exc).__name__)
        if re.fullmatch(r"\d+ requested and \d+ written", strerror):  # numpy's `tofile` (np.save) on a short write
            strerror = f"{strerror} (a short write: the disk is full or a file size limit was reached)"
    renamed = type(exc)(code, strerror or os.strerror(code), str(path)) if code is not None else OSError(None, strerror, str(path))
    return renamed.with_traceback(exc.__traceback__)


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """Writes to `path` in the block: an OSError that names no file names `path` (`named_os_error`)."""
    try:
        yield
    except OSError as exc:
        renamed = named_os_error(exc, path)
        if renamed is exc:
            raise
        raise renamed from None


def close_each(handles: Iterable) -> OSError | None:
    """Close every one of `handles` (files, `NpyAppender`s), even after one failed to flush (a
    full disk), and return the first failure, naming its file (`named_os_error`); None when all
    closed. Returned, not raised: a caller in a `finally` raises it only when no error is on its
    way out already."""
    failed = None
    for handle in handles:
        try:
            handle.close()
        except OSError as exc:
            name = getattr(handle, "name", None)  # an open file's path (an appender names its own)
            failed = failed or (named_os_error(exc, name) if isinstance(name, str) else exc)
    return failed


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Delete the staging (`tmp`) and moved-aside (`old`) folders of `path` that a hard kill
    (SIGKILL, power loss) of an earlier run left beside it: nothing else removes them, and a
    full-size store each. Only folders named exactly as `temp_sibling` names them for `path`
    are touched, never a file, a link or any other name. Called with `path` locked
    (`exclusive`), so no live run's staging folder is among them."""
    path = Path(path)
    pattern = _sibling_pattern(re.escape(path.name))
    try:
        stale = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    except OSError:  # no parent yet, or unreadable: nothing of ours can be there
        return []
    for p in stale:
        _remove_stale(p)
    return stale


def remove_stale_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete, anywhere inside `folder`, what writes cut short by a hard kill left there: the
    temp files of `configs.atomic_write` (`.NAME.tmp-xxxxxxxx`: a half-written checkpoint or
    model.pt each) and the staging or moved-aside folders of `copy_dir` (`.NAME.tmp-` or
    `.old-xxxxxxxx`). Nothing else removes them, and `copy_dir` used to carry a model folder's
    stale temp checkpoint into the copy (a search's best/). Only names exactly as `temp_sibling`
    makes them, files and folders, never links. Called with `folder` locked (`exclusive`), so
    no live write of its run is among them; an output inside it that another live run holds
    (a `subnet train --out` or a study's `--scratch-cache` inside a search's folder) is passed
    by: its temp files were deleted mid-write, failing that run."""
    stale_folder, stale_file = _sibling_pattern(".+"), _sibling_pattern(".+", tags="tmp")
    stale = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _held_elsewhere(Path(parent, d))]
        here = [Path(parent, d) for d in dirs if stale_folder.fullmatch(d)] + [Path(parent, f) for f in files if stale_file.fullmatch(f)]
        here = [p for p in here if not _held_elsewhere(p.parent / stale_folder.fullmatch(p.name)[1])]
        dirs[:] = [d for d in dirs if not stale_folder.fullmatch(d)]  # not walked into: removed, or a link
        for p in here:
            if not p.is_symlink():
                _remove_stale(p)
                stale.append(p)
    return stale


def _sibling_pattern(name: str, tags: str = "tmp|old") -> re.Pattern:
    """The names `temp_sibling` gives beside `name` (a regex; its group 1) with one of `tags`."""
    return re.compile(rf"\.({name})\.(?:{tags})-[0-9a-f]{{{TAG_HEX}}}")


def _held_elsewhere(path: Path) -> bool:
    """Whether another live run holds the lock of the output `path` (`exclusive`). A probe: a
    shared flock on the lock file if there is one, dropped at once; a killed run's file is free."""
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:  # no lock file: no run holds it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _remove_stale(p: Path) -> None:
    log.info("removing %s, left by an interrupted run", p)
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def replace_dir(staging: Path, final: Path) -> None:
    """Swap the folder `staging` in as `final`. A previous `final` is moved aside first, put
    back if the swap fails, and deleted only once the new folder is in place."""
    if not final.exists() and not final.is_symlink():
        os.replace(staging, final)
        return
    trash = temp_sibling(final, "old")
    os.replace(final, trash)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(trash, final)
        raise
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:  # a file or a link where the folder goes (rmtree refuses both): it stayed behind, hidden, for good
        with contextlib.suppress(OSError):
            trash.unlink()
    if trash.exists() or trash.is_symlink():  # a read-only or immutable file inside: the old result, hidden, as big as ever
        log.warning("warning: could not delete all of %s, the folder %s replaced (a file in it cannot be removed); delete it by hand", trash, final)


def copy_dir(src: Path, dst: Path, ignore=None) -> None:
    """Copy the folder `src` as `dst` whole (staged, then `replace_dir`): a failed copy keeps the
    previous `dst`, and the copy never mixes with files an older `dst` held. `ignore` as
    `shutil.copytree` takes it."""
    tmp = temp_sibling(dst)
    failed: list[tuple[OSError, str]] = []

    def copy(s: str, d: str):
        try:
            return shutil.copy2(s, d)
        except OSError as exc:
            failed.append((exc, d))
            raise

    try:
        shutil.copytree(src, tmp, ignore=ignore, copy_function=copy)
        replace_dir(tmp, dst)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, shutil.Error):
            # copytree gathers every file's error into one shutil.Error, printed as a list of
            # tuples naming the hidden staging folder: the first one, naming the file in `dst`
            if failed:
                first, where = failed[0]
                inside = Path(where).relative_to(tmp) if _inside(where, tmp) else Path(where).name
                raise OSError(first.errno, first.strerror or str(first), str(Path(dst) / inside)) from None
            reasons = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
            if reasons and isinstance(reasons[0], tuple) and len(reasons[0]) == 3:
                raise OSError(None, f"cannot copy {src} ({reasons[0][2]})", str(dst)) from None
        raise


def check_parent(path: str | os.PathLike, what: str, error: type[RecnasError] = ConfigError) -> None:
    """An output path below a regular file cannot be created: say so instead of an OSError."""
    for parent in Path(path).parents:  # nearest first
        if parent.exists():
            if not parent.is_dir():
                raise error(f"{what} {path}: {parent} is not a directory")
            return


def check_output_dir(path: str | os.PathLike) -> None:
    """The folder a training run writes into must be creatable. Checked before the work (and
    before an --nproc relaunch), so a file in the way is one error, not a failure mid-run."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} exists and is not a directory")
    check_parent(path, "--out")


def refuse_file_at(path: str | os.PathLike, role: str) -> None:
    """A file where a folder is to be made: mkdir says only "File exists" (or a copy replaces
    the user's file), so name the path and what goes there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file, where {role}; move it away (or choose another --out)")


def check_writable(folder: str | os.PathLike, files: Iterable[str] = (), folders: Iterable[str] = (), what: str = "run") -> None:
    """Before a run's work, not after it: the existing `folder` takes new files (a read-only or
    immutable folder failed at the first checkpoint, after the first evaluation interval of
    training), none of the `files` it will write there is a directory (failed only at the end),
    and none of the `folders` it writes into is a file ("File exists"; or a search's best/
    replaced a file of the user's). A probe file named as `temp_sibling` names it is created and
    removed (`remove_stale_writes` sweeps one a hard kill leaves)."""
    folder = Path(folder)
    for name in files:
        if (folder / name).is_dir():
            raise ConfigError(f"{folder / name} is a directory, where the {what} writes its {name} file; move it away (or choose another --out)")
    for name in folders:
        refuse_file_at(folder / name, f"the {what} writes its {name}/ folder")
    probe = temp_sibling(folder / "write-probe")
    try:
        probe.open("xb").close()
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot write into the {what}'s folder ({exc.strerror or exc}); make it writable or choose another --out") from None
    with contextlib.suppress(OSError):
        probe.unlink()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output `path`: beside it (hidden), since `path` itself may not exist
    yet or be swapped out whole while the run holds the lock. Of the resolved path, so that
    `runs/a`, `./runs/a` and a link to it share one lock (and `.` gets a name)."""
    path = Path(path).resolve()
    return path.parent / f".{path.name}.lock"


_held = threading.local()  # the lock files this thread holds


def _lock_fd(lock: Path, wait: bool) -> int | None:
    """An open descriptor holding an exclusive flock on `lock`, or None if another process holds
    it (and not `wait`). A holder unlinks the file before it unlocks, so a descriptor that wins
    the flock on a file no longer at `lock` is dropped and the open retried."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "--out", error: type[RecnasError] = ConfigError, wait: bool = False, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock of the output `path` for the block. Another process holding it is an error
    at once, or with `wait` a wait for it, announced by calling `waiting` first (a job waiting
    minutes for another one's synthetic data printed nothing: it looked hung). Two runs writing
    one output would remove each other's staging folders and interleave checkpoints.

    Why not the filelock package: on Unix it leaves its lock file behind, and these outputs
    promise nothing left beside them. An OS flock is released by a killed process too, so no
    lock goes stale; its file is removed on release (`_lock_fd` handles that race). Inside a
    torchrun rank (WORLD_SIZE set) nothing is taken: the launching process (`--nproc`) holds the
    lock for all ranks. A thread may take a lock it holds again (a no-op). Where `fcntl` is
    missing (Windows) runs are not locked."""
    if "WORLD_SIZE" in os.environ or fcntl is None:
        yield
        return
    path = Path(path)
    check_parent(path, what, error)
    lock = lock_path(path)
    held = _held.__dict__.setdefault("locks", set())
    if lock in held:  # re-entrant within a thread (`lock_path` resolves): a job generating its own cached data store
        yield
        return
    # the folders made for the lock, nearest first: removed again if the block leaves them empty
    # (a job refused on its --data left an empty `runs/` behind it)
    made = list(itertools.takewhile(lambda p: not p.exists(), [path.parent, *path.parent.parents]))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _lock_fd(lock, wait=False)
        if fd is None and wait:
            if waiting is not None:
                waiting()
            fd = _lock_fd(lock, wait=True)  # re-creates the file its holder removed on release
    except OSError as exc:
        raise error(f"{what} {path}: cannot create its lock file {lock} ({exc.strerror or exc})") from None
    if fd is None:
        raise error(f"{what} {path} is being written by another recnas run (lock {lock}); wait for it to finish or choose another {what}")
    held.add(lock)
    try:
        yield
    finally:
        held.discard(lock)
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still locked: see _lock_fd
        os.close(fd)  # releases the flock
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty (the run wrote into it, or another run's lock is there)
                break


NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a write that found no room: a full disk, a file size limit, a quota


def _inside(filename, folder: Path) -> bool:
    """Whether an OSError's `filename` (None, str or bytes) is `folder` or a path inside it."""
    return isinstance(filename, str) and Path(filename).is_relative_to(folder)


@dataclass(frozen=True)
class OutputDir:
    """A kind of output folder: `marker` (written last) marks a complete one, `names` (when
    given) is everything one may hold, and `error` is what a refusal raises."""

    what: str
    marker: str
    error: type[RecnasError]
    names: tuple[str, ...] | None = None

    def check(self, out: str | os.PathLike, overwrite: bool) -> None:
        """`out` may be missing, an empty folder, or (with `overwrite`) a complete result of
        this kind holding nothing else; never anything else, since replacing it deletes it."""
        out = Path(out)
        check_parent(out, "--out", self.error)
        self._check_not_nested(out)
        if not out.exists() and not out.is_symlink():
            return
        if not out.is_dir():
            raise self.error(f"{out} exists and is not a directory; refusing to replace it (choose another --out)")
        try:
            held = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            raise self.error(f"{out}: cannot read the output folder ({exc.strerror or exc})") from None
        if not held:
            return
        foreign = [name for name in held if self.names is not None and name not in self.names]
        complete = (out / self.marker).is_file()
        if complete and not foreign:
            if not overwrite:
                raise self.error(f"{out} already exists; pass --overwrite to replace it")
            inner = next((p.parent for p in out.rglob(self.marker) if p.parent != out), None)
            if inner is not None:  # written before nesting was refused: replacing `out` would delete it
                raise self.error(f"{out} holds another {self.what}, {inner}; refusing to replace it (move that one out first)")
            return
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        why = f"{', '.join(foreign[:5])} {'is' if len(foreign) == 1 else 'are'} not part of one" if complete else f"no {self.marker}"
        raise self.error(f"{out} holds {shown} but is not a {self.what} ({why}); refusing to replace it, --overwrite only replaces a {self.what}")

    def _holder(self, folders: Iterable[Path]) -> Path | None:
        """The first of `folders` that is a result of this kind: its marker, and (`names` given)
        nothing else, as `check` requires of one it replaces. A folder holding anything else is
        never replaced, so nothing inside it is at risk (and a stray meta.json makes no store)."""
        for folder in folders:
            try:
                if (folder / self.marker).is_file() and (self.names is None or all(p.name in self.names for p in folder.iterdir())):
                    return folder
            except OSError:  # unreadable: not one we could replace either
                continue
        return None

    def _check_not_nested(self, out: Path) -> None:
        """Refuse an `out` inside a result of this kind: it would make that result unreplaceable
        (a foreign name) or, deeper down, be deleted with it by a later --overwrite."""
        parent = self._holder(out.resolve().parents)
        if parent is not None:
            raise self.error(f"--out {out} is inside the {self.what} {parent}; choose an --out outside it (replacing that {self.what} would delete this one)")

    def check_outside(self, path: str | os.PathLike, what: str, error: type[RecnasError] | None = None) -> None:
        """Refuse an output of another kind (a training run's folder, a file) at or inside a
        result of this kind, for the reasons of `_check_not_nested`: a store with a run's model
        files (or a raw.txt) beside its data could no longer be replaced with --overwrite."""
        real = Path(path).resolve()
        holder = self._holder([real, *real.parents])
        if holder is not None:
            where = "is" if holder == real else "is inside"
            raise (error or self.error)(f"{what} {path} {where} the {self.what} {holder}; choose a {what} outside it (a {self.what} holds only its own files)")

    def stage(self, out: str | os.PathLike, overwrite: bool) -> Path:
        """A fresh, empty staging folder beside `out`, after `check`ing that `out` may be replaced
        and removing the staging leftovers of earlier, hard-killed runs for `out`."""
        out = Path(out)
        self.check(out, overwrite)
        remove_leftovers(out)
        tmp = temp_sibling(out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        except OSError as exc:
            raise self.error(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
        return tmp

    def commit(self, staging: Path, out: str | os.PathLike, overwrite: bool) -> Path:
        """Swap the finished `staging` in as `out`, checking `out` again first: something else
        may have appeared there while the run was going."""
        out = Path(out)
        self.check(out, overwrite)
        replace_dir(staging, out)
        return out

    @contextlib.contextmanager
    def staged(self, out: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
        """A staging folder to write into; committed as `out` when the block ends, removed
        (leaving `out` as it was) when it raises. `out` is locked (`exclusive`) throughout.
        An `out` that is a link is written through: its target is staged beside and replaced,
        as the lock already treats it (the link itself would otherwise be swapped for a folder,
        leaving the old result in place and a stray `.out.old-*` link). So is `.` or `..`, by the
        folder's own name: its staging folder went inside it, and the finished run was refused."""
        out = Path(out)  # a str `out` (the Python API) met `out / self.marker` below, a TypeError
        if out.is_symlink() or out.name in ("", ".."):
            out = out.resolve()
        self.check(out, overwrite)  # before the lock, whose file would create `out`'s parents
        with exclusive(out, error=self.error):
            tmp = self.stage(out, overwrite)
            try:
                yield tmp
                self.commit(tmp, out, overwrite)
            except BaseException as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(exc, OSError) and (_inside(exc.filename, tmp) or (exc.filename is None and exc.errno in NO_SPACE)):
                    # a write into the staging folder failed (a full disk, a file size limit): its
                    # hidden name meant nothing to the user, who asked for `out`
                    inner = f"{Path(exc.filename).relative_to(tmp)}: " if exc.filename is not None else ""
                    kept = f"the {self.what} there is kept as it was" if (out / self.marker).is_file() else "nothing was written there"
                    raise self.error(f"{out}: cannot write the {self.what} ({inner}{exc.strerror or exc}); {kept}") from None
                raise
