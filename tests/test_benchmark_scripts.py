"""What every script in benchmarks/ owes its user, checked by running each one as `__main__`
(in this process, on arguments that fail before any real work): a user error is one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import benchmark_refused as refused

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


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


OUTPUTS = [  # (script, arguments it needs, its output flags: file or dir)
    ("codesign", [], {"--out-dir": "dir"}),
    ("cpu_components", [], {"--out": "file"}),
    ("embedding_bandwidth", [], {"--out": "file"}),
    ("embedding_search", [], {"--out": "file"}),
    ("epoch_overfit", ["--data", "store", "model.pt"], {"--out": "file"}),
    ("layernorm_attention", [], {"--out": "file"}),
    ("oracle_bound", [], {"--json-out": "file"}),
    ("prepare_throughput", [], {"--json": "file", "--workdir": "dir"}),
    ("profile_step", [], {"--out": "file", "--kernels": "file"}),
    ("proxy_rank", [], {"--out": "file", "--runs": "dir"}),
    ("retrain", ["dlrm"], {"--out-dir": "dir"}),
    ("search_quality", [], {"--out-dir": "dir"}),
    ("term_capture", ["--data", "store", "model.pt"], {"--out": "file"}),
    ("train_throughput", [], {"--out": "file"}),
]


@pytest.mark.parametrize("name, needs, flag, kind", [(n, a, f, k) for n, a, flags in OUTPUTS for f, k in flags.items()])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_run(name, needs, flag, kind, tmp_path, monkeypatch, capsys):
    """Not after minutes of work, as an OSError traceback that loses the results."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    err = refused(name, [*needs, flag, str(tmp_path / "a-file" / "x")], capsys)
    assert f"argument {flag}" in err and "a-file is not a directory" in err
    wrong = tmp_path if kind == "file" else tmp_path / "a-file"  # a folder where a file goes, and the reverse
    err = refused(name, [*needs, flag, str(wrong)], capsys)
    assert f"argument {flag}" in err and ("is a directory" in err if kind == "file" else "is not a directory" in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing generated or written


SIZES = [  # (script, arguments it needs, flag, a value that means nothing)
    ("codesign", ["--budget", "smoke"], "--retrain", "-1"),  # [:-1]: the cheapest front candidates but the last
    ("codesign", ["--budget", "smoke"], "--tolerance", "-0.1"),
    ("cpu_components", [], "--repeats", "0"),  # min() of no timings
    ("cpu_components", [], "--threads", "0"),
    ("embedding_bandwidth", [], "--batch", "0"),
    ("embedding_bandwidth", [], "--scale", "-1"),
    ("embedding_search", [], "--seeds", "0"),  # no seed: an IndexError after the data was made
    ("embedding_search", [], "--fraction", "0"),
    ("embedding_search", [], "--threads", "-2"),  # a RuntimeError traceback from torch.set_num_threads
    ("embedding_search", [], "--iterations", "0"),  # refused by the config only after the data was generated
    ("embedding_search", [], "--device", "gpu"),
    ("embedding_bandwidth", [], "--device", "nope"),  # a torch RuntimeError
    ("layernorm_attention", [], "--tokens", "64,0"),
    ("oracle_bound", [], "--epochs", "0"),  # an UnboundLocalError after the data was made
    ("oracle_bound", [], "--batch", "0"),
    ("oracle_bound", [], "--lr", "0"),
    ("oracle_bound", [], "--device", "nope"),
    ("prepare_throughput", [], "--rows", "0"),  # an empty raw file, cached
    ("prepare_throughput", [], "--min-count", "0"),
    ("profile_step", [], "--steps", "0"),  # a ZeroDivisionError after the data was made
    ("profile_step", [], "--batch", "-5"),
    ("profile_step", [], "--amp", "fast"),  # a pydantic traceback
    ("profile_step", [], "--model", "nope"),
    ("train_throughput", [], "--steps", "0"),  # "0 samples/s" reported and written
    ("train_throughput", [], "--batch-sizes", "1024,0"),
    ("train_throughput", [], "--amp", "fast"),
    ("train_throughput", [], "--device", "gpu"),
]


@pytest.mark.parametrize("name, needs, flag, value", SIZES)
def test_a_size_that_means_nothing_is_refused_before_the_run(name, needs, flag, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = refused(name, [*needs, flag, value], capsys)
    assert flag in err
    assert list(tmp_path.iterdir()) == []  # nothing generated or written


def test_embedding_search_caches_its_data_per_setting(tmp_path):
    """A store cached under another --max-vocab was reused as if it were this one."""
    from recnas.data.store import CTRStore
    from tests.conftest import load_benchmark

    es = load_benchmark("embedding_search")
    wide, narrow = es.synthetic_store(1000, 3, 60, out=tmp_path), es.synthetic_store(1000, 3, 6, out=tmp_path)
    assert wide != narrow and max(CTRStore(narrow).meta.vocab_sizes) <= 7 < max(CTRStore(wide).meta.vocab_sizes)  # an OOV row each
    assert es.synthetic_store(1000, 3, 60, out=tmp_path) == wide


@pytest.mark.parametrize("name, argv", [
    ("profile_step", ["--rows", "300", "--batch", "16", "--steps", "1", "--space", "full-tiny", "--model", "lr", "--top", "1"]),
    ("train_throughput", ["--rows", "300", "--batch-sizes", "16", "--steps", "1", "--space", "full-tiny", "--models", "lr"]),
])
def test_the_data_generated_for_a_timing_is_deleted_at_exit(name, argv, tmp_path):
    """Each run used to leave its synthetic store in the temp folder (200k rows by default)."""
    import os
    import subprocess

    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": os.pathsep.join([str(BENCHMARKS.parent), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *argv, "--out", str(tmp_path / "out.json")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    left = [p.name for p in temp.iterdir() if not p.name.startswith("torchinductor_")]  # torch's own cache
    assert (tmp_path / "out.json").is_file() and left == []


def test_cpu_components_records_how_many_calls_each_timing_took():
    """The JSON gave one `repeats` for every row, but AutoInt's evaluation runs half as many."""
    from tests.conftest import load_benchmark

    cc = load_benchmark("cpu_components")
    calls = []
    got = cc.run({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # a warm-up call each, then interleaved
    assert {k: v["repeats"] for k, v in got.items()} == {"a": 3, "b": 3}


def test_the_criteo_sized_benchmarks_share_one_table_of_field_sizes():
    """embedding_bandwidth.py kept its own copy of prepare_throughput.py's list."""
    from recnas.scripts import CRITEO_CARDINALITY
    from tests.conftest import load_benchmark

    assert len(CRITEO_CARDINALITY) == 26
    for name in ("prepare_throughput", "embedding_bandwidth"):
        module = load_benchmark(name)
        assert module.CRITEO_CARDINALITY is CRITEO_CARDINALITY and not hasattr(module, "CARDINALITY")


def test_one_kernel_timer_for_the_kernel_benchmarks():
    """embedding_bandwidth.py and layernorm_attention.py each had a copy of this loop."""
    from recnas.scripts import mean_seconds
    from tests.conftest import load_benchmark

    calls = []
    assert mean_seconds(lambda: calls.append(1), 4, "cpu") >= 0 and len(calls) == 3 + 4  # three warm-up calls untimed
    for name in ("embedding_bandwidth", "layernorm_attention"):
        module = load_benchmark(name)
        assert module.mean_seconds is mean_seconds and not hasattr(module, "timed") and not hasattr(module, "timed_ms")


def test_profile_step_on_the_cpu_reports_no_device_time_rather_than_zero(tmp_path, monkeypatch, capsys):
    import json

    from tests.conftest import run_benchmark

    monkeypatch.chdir(tmp_path)
    run_benchmark("profile_step", "--rows", "300", "--batch", "16", "--steps", "2", "--space", "full-tiny", "--model", "lr", "--top", "1", "--device", "cpu", "--out", "p.json")
    summary = json.loads((tmp_path / "p.json").read_text())
    assert summary["wall_ms_per_step"] > 0 and summary["device"] == "cpu"
    assert summary["device_ms_per_step"] is None and summary["kernels_per_step"] is None
    out = capsys.readouterr().out
    assert "wall ms/step" in out and "{" not in out  # a table, as every benchmark prints, not the JSON
    row = next(line for line in out.splitlines() if line.count("│") >= 6 and "off" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[0] == "off" and float(cells[2]) == pytest.approx(summary["wall_ms_per_step"], abs=0.006)
    assert cells[4] == cells[5] == "-"  # not measured on the CPU, not a 0


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["embedding_bandwidth", "oracle_bound"])
def test_cuda_on_a_machine_without_it_is_refused_before_the_run(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = refused(name, ["--device", "cuda"], capsys)
    assert "argument --device" in err and "no CUDA device" in err and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_only_benchmark_on_a_machine_without_one_says_so_in_one_error_line(tmp_path, monkeypatch, capsys):
    """layernorm_attention.py printed 'needs a CUDA GPU' without 'error:' and exited with 1."""
    monkeypatch.chdir(tmp_path)
    err = refused("layernorm_attention", ["--batch", "16"], capsys)
    assert err.startswith("error: ") and "needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_a_side_by_side_failure_is_one_line_naming_the_first_and_fewer_jobs_after_an_oom():
    """What `benchmarks/retrain.py --jobs` and `search_quality.py --jobs` say when some of their
    processes fail: how many, the first error's first line, and fewer jobs only where the GPU
    ran out of memory."""
    import torch

    from recnas.scripts import failures

    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 976.00 MiB.\nProcess 1253 has 18.07 GiB memory in use.")
    msg = str(failures([ValueError("bad"), oom], 6, "trainings", "the 4 finished are in X; "))
    assert msg.startswith("2 of 6 trainings failed (the first: ValueError: bad); the 4 finished are in X; a re-run, with fewer --jobs,")
    assert "\n" not in msg and "Process 1253" not in msg
    assert "fewer --jobs" not in str(failures([ValueError("")], 1, "seeds", "")) and "(the first: ValueError)" in str(failures([ValueError("")], 1, "seeds", ""))


@pytest.mark.parametrize("name, argv", [
    ("profile_step", ["--rows", "300", "--batch", "16", "--steps", "1", "--space", "full-tiny", "--model", "lr", "--top", "1", "--device", "cpu"]),
    ("train_throughput", ["--rows", "300", "--batch-sizes", "16", "--steps", "1", "--space", "full-tiny", "--models", "lr", "--device", "cpu"]),
    ("embedding_bandwidth", ["--batch", "16", "--scale", "0.0001", "--repeats", "1", "--device", "cpu"]),
])
def test_the_json_records_the_date_the_machine_and_every_argument(name, argv, tmp_path, monkeypatch, capsys):
    """profile_step.py's JSON had no date and none of --rows, --space or --steps;
    embedding_bandwidth.py's not --scale nor --repeats (its table rows were from 1% of Criteo's
    tables or all of them, no one could tell); neither said where it wrote."""
    import json

    from tests.conftest import run_benchmark

    monkeypatch.chdir(tmp_path)
    run_benchmark(name, *argv, "--out", "r.json")
    assert "-> r.json" in capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["date"].startswith("20") and result["environment"]["device"] == "cpu" and result["environment"]["torch"]
    given = dict(zip(argv[::2], argv[1::2]))
    for flag, value in given.items():
        recorded = result["args"][flag[2:].replace("-", "_")]
        assert str(recorded[0] if isinstance(recorded, list) else recorded) == value, flag
    assert result["args"]["out"] == "r.json"


def test_provenance_keeps_what_a_result_says_already(tmp_path):
    import argparse

    from recnas.scripts import provenance

    args = argparse.Namespace(models=[tmp_path / "a.pt"], rows=3)
    got = provenance({"when": "then", "args": {"kept": 1}}, args)
    assert "date" not in got and got["args"] == {"kept": 1} and got["environment"]["device"] == "cpu"
    assert provenance({}, args)["args"] == {"models": [str(tmp_path / "a.pt")], "rows": 3}


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_help_describes_the_script_and_every_option(name, monkeypatch, capsys):
    """--help of most scripts listed bare options (codesign.py's --budget, --objective,
    --out-dir; profile_step.py's ten) and no description: what an option meant (a budget's
    names, which device by default, where the JSON goes) was only in the source."""
    import argparse

    from tests.conftest import run_benchmark

    seen = {}

    def capture(self, args=None, namespace=None):
        seen["parser"] = self
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        run_benchmark(name)
    parser = seen["parser"]
    assert parser.description
    assert [a.dest for a in parser._actions if not a.help] == []


@pytest.mark.parametrize("name, argv, out_flag", [
    ("embedding_search", ["--rows", "1000", "--n-sparse", "3", "--max-vocab", "20", "--seeds", "1", "--iterations", "1", "--supernet-epochs", "0.1", "--epochs", "1", "--val-rows", "100", "--batch-size", "256"], "--out"),
    ("oracle_bound", ["--rows", "1000", "--epochs", "1", "--latent-dim", "2"], "--json-out"),
])
def test_the_generated_data_is_cached_beside_the_result(name, argv, out_flag, tmp_path, monkeypatch):
    """embedding_search.py cached its synthetic store in the checkout's benchmarks/out whatever
    --out said, oracle_bound.py in benchmarks/out/data under the working folder: a run told to
    write elsewhere still left a store (60k, 1M rows by default) where no one asked for it."""
    from tests.conftest import run_benchmark

    monkeypatch.chdir(tmp_path)
    checkout = BENCHMARKS / "out"
    before = set(checkout.iterdir()) if checkout.exists() else set()
    run_benchmark(name, *argv, out_flag, str(tmp_path / "res" / "r.json"))
    assert (tmp_path / "res" / "r.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["res"]
    assert len([p for p in (tmp_path / "res").rglob("meta.json")]) == 1  # the store, beside the result
    assert (set(checkout.iterdir()) if checkout.exists() else set()) == before
