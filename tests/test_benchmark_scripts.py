"""What every script in benchmarks/ owes its user, checked by running each one as `__main__`
(in this process, on arguments that fail before any real work): a user error is one line."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def run_benchmark(name: str, *argv: str) -> None:
    """benchmarks/NAME.py run as a script with `argv`."""
    old = sys.argv
    sys.argv = [f"{name}.py", *argv]
    try:
        runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv = old


def refused(name: str, argv: list[str], capsys) -> str:
    """The script exits with code 2; returns what it printed on stderr."""
    with pytest.raises(SystemExit) as exc:
        run_benchmark(name, *argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("search_quality", ["--budget", "nope"], "unknown budget 'nope'"),
        ("codesign", ["--budget", "nope"], "unknown budget 'nope'"),
        ("proxy_rank", ["--budget", "nope"], "unknown budget 'nope'"),
        ("embedding_search", ["--data", "missing"], "not a prepared recnas dataset"),
        ("train_throughput", ["--data", "missing"], "not a prepared recnas dataset"),
        ("oracle_bound", ["--rows", "50"], "rows must be an integer"),
        ("profile_step", ["--rows", "50"], "rows must be an integer"),
    ],
)
def test_a_user_error_is_one_line_not_a_traceback(name, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the scripts' default outputs are relative paths
    err = refused(name, argv, capsys)
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
