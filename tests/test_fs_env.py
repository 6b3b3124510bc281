"""The file system and the environment in the way: a file size limit or a full disk mid-write,
a folder or file where the other goes, `~` in a path, NO_COLOR, a narrow terminal. Each is one
`error:` line (no traceback), what was written before is kept, and a re-run goes on."""

from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recnas.errors import ConfigError
from recnas.staging import check_writable, named_os_error, naming, replace_dir
from tests.test_cli_models import TINY, error_line, run

ROOT = Path(__file__).resolve().parent.parent
resource = pytest.importorskip("resource")  # RLIMIT_FSIZE: POSIX


def _limited(limit: int, *argv: str, code: str | None = None) -> subprocess.CompletedProcess:
    """`recnas ARGV` (or the Python `code`) in a subprocess whose files may not grow past `limit`
    bytes: a write past it fails with EFBIG (Python ignores SIGXFSZ), as on a full disk."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "recnas", *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=cap, env=env, cwd=ROOT)


def _one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    return error_line(r.stderr)


def test_checkpoint_past_a_file_size_limit_is_one_line_and_the_run_goes_on(tiny_store, tmp_path):
    """torch's zip writer turned EFBIG (and ENOSPC) into "RuntimeError: ... unexpected pos", a
    traceback; now the OSError names the checkpoint, and the run is resumed without the limit."""
    out = tmp_path / "o"
    args = ("baseline", "train", "dlrm", "--data", str(tiny_store.dir), "--config", TINY, "--out", str(out), "--no-progress")
    line = _one_line(_limited(20_000, *args))
    assert f"{out / 'checkpoint.pt'}: File too large" in line, line
    assert not [p.name for p in out.iterdir()], "a temp file was left, or a half-written checkpoint"
    code = subprocess.run([sys.executable, "-m", "recnas", *args], capture_output=True, text=True, timeout=300, cwd=ROOT).returncode
    assert code == 0 and (out / "model.pt").is_file()


def test_torch_save_failing_to_write_raises_the_os_error(tmp_path):
    r = _limited(4096, code=(
        "import errno, torch\n"
        "from recnas.train.checkpoint import torch_save\n"
        "try:\n"
        f"    with open({str(tmp_path / 'x.pt')!r}, 'wb') as fh:\n"
        "        torch_save({'w': torch.zeros(100_000)}, fh)\n"
        "except OSError as exc:\n"
        "    assert exc.errno == errno.EFBIG, exc\n"
        "    print('oserror')\n"
    ))
    assert r.returncode == 0 and r.stdout.strip() == "oserror", r.stderr


def test_store_past_a_file_size_limit_names_the_store_and_keeps_the_old_one(tmp_path):
    """numpy's and the appender's writes name no file ("error: File too large" alone); the
    staging folder's hidden name meant nothing either. The previous store stays whole."""
    out = tmp_path / "s"
    assert _limited(10**8, "data", "synth", "--rows", "500", "--out", str(out)).returncode == 0
    before = (out / "meta.json").read_text()
    line = _one_line(_limited(100_000, "data", "synth", "--rows", "20000", "--out", str(out), "--overwrite"))
    assert line.startswith(f"error: {out}: cannot write the recnas store (") and "File too large" in line and "kept as it was" in line, line
    assert (out / "meta.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no staging folder left


def test_prepare_past_a_file_size_limit_names_the_file(tmp_path):
    raw = tmp_path / "train.txt"
    assert _limited(10**8, "data", "synth", "--rows", "2000", "--out", str(tmp_path / "s"), "--raw-out", str(raw)).returncode == 0
    line = _one_line(_limited(20_000, "data", "prepare", "--dataset", "criteo", "--raw", str(raw), "--out", str(tmp_path / "p")))
    assert f"{tmp_path / 'p'}: cannot write the recnas store (_work/" in line and "File too large" in line, line
    assert not (tmp_path / "p").exists()


def test_raw_out_past_a_file_size_limit_names_it(tmp_path):
    """polars's writer raises OSError("File too large (os error 27)"), no errno, no file."""
    raw = tmp_path / "train.txt"
    line = _one_line(_limited(200_000, "data", "synth", "--rows", "2000", "--out", str(tmp_path / "s"), "--raw-out", str(raw)))
    assert line == f"error: {raw}: File too large", line
    assert not (tmp_path / "s").exists() and not raw.exists()


def test_results_database_that_cannot_be_written_is_one_error(tmp_path):
    """SQLite's "disk I/O error" (a file size limit, a full disk) or "attempt to write a readonly
    database" was a traceback midway through a search; the candidates committed before stay."""
    db = tmp_path / "search.sqlite"
    r = _limited(40_000, code=(
        "from recnas.search.results import ResultsStore\n"
        "from recnas.errors import DataError\n"
        f"s = ResultsStore({str(db)!r})\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        s.put(f'k{i}', 'x' * 500, {'logloss': 0.5})\n"
        "except DataError as exc:\n"
        "    print(exc)\n"
    ))
    assert r.returncode == 0 and "cannot write the results database (" in r.stdout and "Traceback" not in r.stderr, r.stderr
    from recnas.search.results import ResultsStore

    assert len(ResultsStore(db)) > 0  # what was committed before the failing write


def test_named_os_error_names_the_file_of_a_write_that_named_none():
    e = named_os_error(OSError("File too large (os error 27)"), "/x/y")  # polars
    assert (e.errno, e.strerror, e.filename) == (errno.EFBIG, "File too large", "/x/y")
    e = named_os_error(OSError("4000 requested and 224 written"), "p.npy")  # numpy's tofile
    assert e.filename == "p.npy" and "the disk is full or a file size limit was reached" in e.strerror
    e = named_os_error(OSError(errno.ENOSPC, "No space left on device"), "z")
    assert (e.errno, e.filename) == (errno.ENOSPC, "z")
    named = FileNotFoundError(errno.ENOENT, "No such file or directory", "a")
    assert named_os_error(named, "b") is named
    with pytest.raises(OSError, match="File too large") as info, naming("f.bin"):
        raise OSError(errno.EFBIG, "File too large")
    assert info.value.filename == "f.bin"


def test_replacing_a_file_with_a_folder_leaves_nothing_behind(tmp_path):
    """`replace_dir` onto a file (or a link): rmtree refused it, and a hidden `.NAME.old-*` stayed for good."""
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("x")
    (tmp_path / "best").write_text("a file")
    replace_dir(tmp_path / "new", tmp_path / "best")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"] and (tmp_path / "best" / "f").is_file()


def test_a_folder_where_a_run_file_goes_is_refused_before_training(tiny_store, tmp_path, monkeypatch, capsys):
    """A directory at checkpoint.pt (or model.pt, ...) failed only when the file was written:
    after the first evaluation interval, or at the very end of the run."""
    out = tmp_path / "o"
    (out / "checkpoint.pt").mkdir(parents=True)
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", out, "--overwrite")
    line = error_line(err)
    assert code == 2 and f"{out / 'checkpoint.pt'} is a directory" in line, line
    assert "step" not in err  # refused before the first step
    (out / "checkpoint.pt").rmdir()
    out.rmdir()
    out.write_text("a file")
    with pytest.raises(ConfigError, match="is a file, where the run writes its folder"):
        from recnas.train import Trainer
        from tests.test_trainer import make_model, tiny_cfg

        Trainer(make_model(tiny_store.meta), tiny_cfg(epochs=1), tiny_store, out_dir=out, progress=False).fit()


def test_check_writable(tmp_path):
    check_writable(tmp_path, ["a.json"], ["best"])
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    (tmp_path / "best").write_text("notes")
    with pytest.raises(ConfigError, match="best is a file, where the search writes its best/ folder"):
        check_writable(tmp_path, [], ["best"], what="search")


def test_search_refuses_a_file_where_its_best_folder_goes(tiny_store, tmp_path, monkeypatch, capsys):
    """best/ replaced a file of the user's there (and left it hidden beside as `.best.old-*`)."""
    from recnas.search.job import dump_config, load_job_config

    out = tmp_path / "run"
    out.mkdir()
    dump_config(load_job_config("smoke", data=str(tiny_store.dir)), out / "config.yaml")
    (out / "best").write_text("my notes")
    code, _, err = run(monkeypatch, capsys, "search", "--budget", "smoke", "--data", tiny_store.dir, "--out", out, "--no-progress")
    assert code == 2 and "best is a file, where the search writes its best/ folder" in error_line(err)
    assert (out / "best").read_text() == "my notes"


def test_moved_store_says_how_to_continue_the_run(tiny_store, tmp_path):
    import shutil

    from recnas.search.job import check_same_run, dump_config, load_job_config

    old = tmp_path / "old"
    shutil.copytree(tiny_store.dir, old)
    (tmp_path / "run").mkdir()
    dump_config(load_job_config("smoke", data=str(old)), tmp_path / "run" / "config.yaml")
    new = tmp_path / "new"
    old.rename(new)
    with pytest.raises(ConfigError, match=r"no store is at .*old any more: if that very store was moved to .*new.*set `data: "):
        check_same_run(load_job_config("smoke", data=str(new)), tmp_path / "run" / "config.yaml")


def test_a_store_path_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    """The run's config.yaml records the store's path: a name of non-UTF-8 bytes failed there
    with a PydanticSerializationError traceback, after the run folder was made."""
    from recnas.search.job import load_job_config

    with pytest.raises(ConfigError, match="is not a UTF-8 path"):
        load_job_config("smoke", data=str(tmp_path) + "/bad\udcffname")


def test_tilde_in_a_path_option_is_the_home_folder(tmp_path, monkeypatch):
    """The shell leaves `--out=~/x` (and a quoted "~/x") alone: a folder named `~` was made."""
    from recnas.cli.paths import parse_path

    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_path("~/runs/a") == tmp_path / "runs" / "a"
    assert parse_path("~no-such-user-here/x") == Path("~no-such-user-here/x")
    assert parse_path("a/~b") == Path("a/~b")


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_error_line_has_no_colour_when_asked(tmp_path, monkeypatch, capsys, env):
    """The error line was red on a terminal under NO_COLOR (and TERM=dumb), which rich honours."""
    import typer

    styled = []
    monkeypatch.setattr(typer, "secho", lambda *a, **k: styled.append(a))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", tmp_path / "none.pt", "--data", tmp_path)
    assert code == 2 and not styled and "\x1b[" not in err and err.startswith("error: ")


def test_search_show_keeps_whole_keys_on_a_narrow_terminal(tmp_path, monkeypatch, capsys):
    """rich cut every cell to fit (`8b986e9…`, `0.…`): the keys and scores the table is for."""
    from recnas.search.results import ResultsStore

    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    store.put("8b986e9b75e0e9de", "{}", {"logloss": 0.54151, "auc": 0.5674, "flops": 31584, "params": 6401})
    store.close()
    monkeypatch.setenv("COLUMNS", "40")
    code, out, _ = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    cells = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│")]
    columns = ["".join(c[i].strip() for c in cells) for i in range(5)]  # each cell folded onto lines below, never cut
    assert code == 0 and "…" not in out and columns == ["8b986e9b75e0e9de", "0.5415", "0.5674", "31,584", "6,401"], out


def test_embedding_report_lines_are_not_broken_when_piped(capsys):
    """Piped (80 columns), rich broke the budget line in two: "99.8%" and "used" on two lines."""
    from recnas.embedding.report import print_report

    n = 40
    report = {
        "fields": [f"C{i}" for i in range(n)], "vocab_sizes": [1000] * n, "emb_dims": [4] * n,
        "stability": {"seeds": 1, "per_field": [{"agreement": 1.0}] * n, "overall_agreement": 1.0},
        "params": 123_456_789, "mib": 470.9, "budget_params": 123_456_790, "budget_mib": 470.9, "budget_used": 0.998,
    }
    print_report(report)
    out = capsys.readouterr().out
    assert any(line.startswith("embedding tables: ") and line.endswith("99.8% used") for line in out.splitlines()), out


def test_copy_dir_failing_names_the_file_and_keeps_the_old_copy(tmp_path, monkeypatch):
    """copytree's shutil.Error was printed as a list of tuples naming the hidden staging folder
    (a search's best/ copied under a full disk or a file size limit)."""
    import shutil

    from recnas.staging import copy_dir

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.pt").write_text("new")
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "model.pt").write_text("old")

    def full(src, dst, **kwargs):
        raise OSError(errno.EFBIG, "File too large", src, None, dst)

    monkeypatch.setattr(shutil, "copy2", full)
    with pytest.raises(OSError) as info:
        copy_dir(tmp_path / "src", tmp_path / "best")
    assert (info.value.filename, info.value.strerror) == (str(tmp_path / "best" / "model.pt"), "File too large")
    assert (tmp_path / "best" / "model.pt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "src"]


def test_piped_output_has_no_blank_line_from_a_progress_bar(tmp_path, monkeypatch, capsys):
    """A transient progress bar, not drawn on a pipe, still left an empty first line in the log."""
    from recnas.data.synthetic import generate

    generate(tmp_path / "s", rows=300, raw_out=tmp_path / "train.txt")
    code, out, _ = run(monkeypatch, capsys, "data", "prepare", "--dataset", "criteo", "--raw", tmp_path / "train.txt", "--out", tmp_path / "p")
    assert code == 0 and out.splitlines()[0].startswith("criteo: 300 rows"), out


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_text_stdout_cannot_encode_is_escaped_not_a_traceback(tmp_path, encoding):
    """Under `PYTHONIOENCODING=ascii` (or a Latin-1 locale) a name stdout cannot encode (here a
    dataset name in results.md; a run path in `recnas search`'s lines) ended the command in a
    UnicodeEncodeError traceback; it is written as a backslash escape."""
    from recnas.search.results import ResultsStore

    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    store.put("8b986e9b75e0e9de", "{}", {"logloss": 0.54151, "auc": 0.5674, "flops": 31584, "params": 6401})
    store.close()
    (tmp_path / "run" / "results.md").write_text("dataset: `données → 東京`\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "PYTHONIOENCODING": encoding}
    r = subprocess.run([sys.executable, "-m", "recnas", "search", "show", str(tmp_path / "run")], capture_output=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode(errors="replace")
    assert b"0.5415" in r.stdout and b"\\u2192 \\u6771\\u4eac" in r.stdout, r.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="file names of any bytes")
def test_undecodable_bytes_of_a_path_are_written_back_as_they_were(tmp_path):
    """A folder name that is not UTF-8 (held as lone surrogates) under a strict UTF-8 stdout
    (en_US.UTF-8, PYTHONIOENCODING=utf-8): `recnas search --out` such a folder ended in a
    traceback at its first line; the error line named it `x\\udce9y`, which no shell finds.
    The bytes are written as they were, the path copy-pasteable."""
    importlib.import_module("recnas.cli")  # registers the handler

    assert "runs/x\udce9y ->".encode("utf-8", "recnas.escape") == b"runs/x\xe9y ->"
    assert "é\udce9".encode("ascii", "recnas.escape") == b"\\xe9\xe9"
    folder = os.fsencode(tmp_path) + b"/x\xe9y"
    os.mkdir(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "PYTHONIOENCODING": "utf-8"}
    r = subprocess.run([sys.executable, "-m", "recnas", "search", "show", folder], capture_output=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith(b"error: " + folder + b": no search.sqlite here"), r.stderr


@pytest.mark.parametrize("command", [["supernet", "train"], ["subnet", "train"], ["study", "rank"], ["embed", "search"]])
def test_help_keeps_every_word_at_80_columns(monkeypatch, capsys, command):
    """At 80 columns (a default terminal, or piped) Typer's help cut words too long for its help
    column: `--sampler` read "single-op-any-con…" (a sampler's name and the default lost),
    `--inherit` "model.pt/checkpoi…". They are folded onto the next line instead."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(monkeypatch, capsys, *command, "--help")
    text = "".join(line.strip("│ \n") for line in out.splitlines())  # folded pieces joined again
    assert code == 0 and "…" not in out, out
    if command == ["supernet", "train"]:
        assert "single-op-any-conn" in text.replace(" ", ""), out
