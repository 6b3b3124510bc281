"""Shared test fixtures: tiny stores written in milliseconds."""

from __future__ import annotations

import contextlib
import importlib.util
import runpy
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from recnas.data.schema import SPLITS, DatasetMeta
from recnas.data.store import CTRStore, SplitArrays, write_store
from recnas.space import get_space
from recnas.space.spaces import DENSE_OPS

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_cli_logging():
    """A CLI command run in-process attaches its log handler to the stderr of that moment, which
    under `capsys` is closed once the test ends: a later test's log lines would then fail with
    "Logging error" tracebacks in its captured stderr. Each test leaves the handlers as it found them."""
    import logging

    logger = logging.getLogger("recnas")
    before = list(logger.handlers)
    yield
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def _default_terminal(monkeypatch):
    """The tables and help are laid out for the terminal's width, which rich and click take from
    COLUMNS (LINES) when set: a shell exporting them (COLUMNS=40 in a narrow window) wrapped headers
    and cells the tests look for ("wall ms/step", a key) over two lines, so that
    test_run_files, test_epoch_overfit, test_fs_env's encoding tests and profile_step's failed there
    and passed on CI. Each test starts at the default width, as piped on CI (80); one that means a
    width sets it itself. Removed from os.environ, so the commands a test runs in a subprocess
    inherit the default too. So with rich's FORCE_COLOR (TTY_COMPATIBLE, TTY_INTERACTIVE), set by
    some CI services: its escape codes in the captured output failed 9 tests of the CLI files."""
    for name in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    rich_utils = sys.modules.get("typer.rich_utils")  # Typer's help read FORCE_COLOR, PY_COLORS and GITHUB_ACTIONS at import
    if rich_utils is not None and hasattr(rich_utils, "FORCE_TERMINAL"):
        monkeypatch.setattr(rich_utils, "FORCE_TERMINAL", None)


@pytest.fixture(autouse=True)
def _close_figures():
    """Every pyplot figure a test left open is closed after it: tests replace save_figure (which
    closes what it saves) by stand-ins that keep the figure to look at, and pyplot warned of more
    than 20 open figures in the suite. Only where a test has loaded pyplot."""
    yield
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")


TINY_SPACES = ["full-tiny", "small-tiny", "every-op-tiny"]


@contextlib.contextmanager
def locked_elsewhere(path):
    """Hold the output lock of `path` in another thread for the block, as another run would
    (a thread may re-take its own locks, so the test's thread must not hold it)."""
    from recnas.staging import exclusive

    taken, release = threading.Event(), threading.Event()

    def hold():
        with exclusive(path):
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join(10)


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (the folder is not a package), for testing its functions."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_benchmark(name: str, *argv: str) -> None:
    """benchmarks/NAME.py run as a script (`__main__`) with `argv`, in this process."""
    old = sys.argv
    sys.argv = [f"{name}.py", *argv]
    try:
        runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv = old


def benchmark_refused(name: str, argv: list[str], capsys) -> str:
    """benchmarks/NAME.py exits with code 2 on `argv`; returns what it printed on stderr."""
    with pytest.raises(SystemExit) as exc:
        run_benchmark(name, *argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def tiny_space(name: str, **overrides):
    """A preset, `every-op-tiny` (`full-tiny` with every operator, NASRec's and ours),
    `cin-tiny` (`full-tiny` with a CIN head beside every architecture's blocks) or
    `cin-nosplit-tiny` (the same head without xDeepFM's split: every map pooled and sent on)."""
    if name == "every-op-tiny":
        return get_space("full-tiny", dense_ops=DENSE_OPS, **overrides)
    if name == "cin-tiny":
        return get_space("full-tiny", cin_head=(4, 3), **overrides)
    if name == "cin-nosplit-tiny":
        return get_space("full-tiny", cin_head=(4, 3), cin_head_split=False, **overrides)
    return get_space(name, **overrides)


def make_tiny_store(path, rows: int = 600, n_dense: int = 3, vocab_sizes=(7, 11, 5, 9), seed: int = 0) -> CTRStore:
    """A small store whose label depends on a dense feature and a pairwise field interaction."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(rows, n_dense)).astype(np.float32)
    sparse = np.stack([rng.integers(0, v, rows) for v in vocab_sizes], 1).astype(np.int32)
    logit = (dense[:, 0] if n_dense else 0) + np.where((sparse[:, 0] % 2) == (sparse[:, min(1, len(vocab_sizes) - 1)] % 2), 1.5, -1.5)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cut = [int(rows * 0.8), int(rows * 0.9)]
    parts = np.split(np.arange(rows), cut)
    splits = {s: SplitArrays(dense[i], sparse[i], label[i]) for s, i in zip(SPLITS, parts)}
    meta = DatasetMeta(
        name="tiny",
        dense_names=[f"I{i + 1}" for i in range(n_dense)],
        cat_names=[f"C{i + 1}" for i in range(len(vocab_sizes))],
        vocab_sizes=list(vocab_sizes),
        rows={},
        positive_rate={s: float(splits[s].label.mean()) for s in SPLITS},
    )
    write_store(path, splits, meta)
    return CTRStore(path)


@pytest.fixture
def tiny_store(tmp_path) -> CTRStore:
    return make_tiny_store(tmp_path / "tiny")


DIVERGED = "training diverged: loss nan at step 9; lower lr or set grad_clip"


def diverge_where(monkeypatch, when) -> None:
    """Every `Trainer.fit` for whose trainer and keyword arguments `when` holds raises
    TrainingDiverged(DIVERGED) at once: a training that diverges, without training one."""
    from recnas.errors import TrainingDiverged
    from recnas.train import trainer

    fit = trainer.Trainer.fit

    def patched(self, *args, **kwargs):
        if when(self, kwargs):
            raise TrainingDiverged(DIVERGED)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "fit", patched)


def diverge_one_finalist(monkeypatch) -> tuple[list[str], dict]:
    """The first finalist of a search job to train diverges (its key lands in the returned list);
    with the dict's "one" set False, every finalist does."""
    failed, every = [], {"one": True}

    def when(trainer, _) -> bool:
        where = trainer.out_dir
        if where is not None and where.parent.name == "finalists" and (not every["one"] or not failed or failed[0] == where.name):
            failed[:] = failed or [where.name]
            return True
        return False

    diverge_where(monkeypatch, when)
    return failed, every
