"""`recnas supernet/subnet/baseline train` and `recnas evaluate`, run through `recnas.cli.main`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from recnas.cli import main
from tests.conftest import locked_elsewhere

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = str(CONFIGS / "train-tiny.yaml")


def run(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Call the real entry point (error handling included); returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["recnas", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_error_line_shows_control_characters_as_escapes(tmp_path, monkeypatch, capsys):
    """A name in an error (a path, a key read from a file) went to the terminal as it was: its
    control characters acted there (cleared the screen, rewrote the line) instead of showing."""
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", tmp_path / "m.pt", "--data", tmp_path / "a\x1b[2Jb\rc")
    assert code == 2 and "\x1b" not in err and "\r" not in err
    assert "a\\x1b[2Jb\\x0dc: not a prepared recnas dataset" in error_line(err), err


def test_bad_config_exits_2_with_one_line(tiny_store, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nlearning_rate: 0.1\n")
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", bad, "--out", tmp_path / "o")
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and "'learning_rate'" in line and "valid keys" in line
    bad.write_text("optimizer: sgd\n")
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", bad, "--out", tmp_path / "o")
    assert code == 2 and "allowed: adam, adagrad" in error_line(err)
    assert not (tmp_path / "o").exists()


def test_evaluate_refuses_a_corrupt_checkpoint(tiny_store, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not a checkpoint")
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", ckpt, "--data", tiny_store.dir)
    assert code == 2 and "corrupt" in error_line(err)
    assert ckpt.read_bytes() == b"not a checkpoint"


def test_baseline_train_resume_and_evaluate(tiny_store, tmp_path, monkeypatch, capsys):
    pytest.importorskip("recnas.baselines").build_baseline
    out = tmp_path / "lr"
    args = ["baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", out, "--steps", "10"]
    code, stdout, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "trained 10 steps" in stdout and {p.name for p in out.iterdir()} >= {"model.pt", "checkpoint.pt", "metrics.json", "config.yaml"}
    assert json.loads((out / "metrics.json").read_text())["steps"] == 10

    code, _, err = run(monkeypatch, capsys, *args)  # an existing run is never clobbered silently
    assert code == 2 and "--resume" in error_line(err)
    code, stdout, err = run(monkeypatch, capsys, *args[:-1], "15", "--resume")
    assert code == 0 and "trained 15 steps" in stdout, err

    report = tmp_path / "eval.json"
    code, stdout, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, "--split", "test", "--json-out", report)
    assert code == 0, err
    got = json.loads(report.read_text())
    assert got["rows"] == 60 and got["step"] == got["run_steps"] == 15 and 0 < got["logloss"] < 2 and f"logloss {got['logloss']:.5f}" in stdout

    arch = tmp_path / "arch.json"
    arch.write_text("{}")
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, "--arch", arch, "--json-out", tmp_path / "e2.json")
    assert code == 2 and "--arch chooses the subnet of a supernet" in error_line(err) and "holds a baseline" in err  # not silently ignored
    assert not (tmp_path / "e2.json").exists()
    monkeypatch.setattr("recnas.train.metrics.predict", lambda *a, **k: pytest.fail("evaluated although --json-out is unusable"))
    for bad, message in ((tmp_path, "is a directory"), (report / "x.json", "eval.json is not a directory")):
        code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, "--json-out", bad)
        assert code == 2 and f"--json-out {bad}" in error_line(err) and message in err

    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", tmp_path / "x", "--hparams", "{oops")
    assert code == 2 and "--hparams" in error_line(err)


def test_training_refuses_to_replace_a_config_kept_in_out(tiny_store, tmp_path, monkeypatch, capsys):
    """A config kept in --out (runs/a/config.yaml) was replaced by the run's resolved config:
    its comments were lost and an override such as --steps 3 baked in as max_steps for every
    later run with it. Files a run writes, in an --out that holds no run, need --overwrite."""
    pytest.importorskip("recnas.baselines").build_baseline
    out = tmp_path / "a"
    out.mkdir()
    mine = out / "config.yaml"
    mine.write_text("# tuned by hand\n" + (CONFIGS / "train-tiny.yaml").read_text())
    before = mine.read_text()
    args = ["baseline", "train", "lr", "--data", tiny_store.dir, "--config", mine, "--out", out, "--steps", "3"]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and f"--config {mine} is one of them" in error_line(err) and "--overwrite" in err
    assert mine.read_text() == before and sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    code, _, err = run(monkeypatch, capsys, *args, "--overwrite")
    assert code == 0, err
    assert "max_steps: 3" in mine.read_text()


def _training_commands(tmp_path) -> dict[str, list]:
    """Each training command (`_train`) with what it needs besides --data, --config and --out."""
    from recnas.space import get_space
    from recnas.space.samplers import make_sampler

    arch = tmp_path / "arch.json"
    make_sampler("single-op-any-conn", get_space("small-tiny"), 1).sample().save(arch)
    return {"supernet": ["supernet", "train", "--space", "small-tiny"], "subnet": ["subnet", "train", "--space", "small-tiny", "--arch", arch], "baseline": ["baseline", "train", "lr"]}


@pytest.mark.parametrize("command", ["supernet", "subnet", "baseline"])
def test_device_overrides_the_configs_device(command, tiny_store, tmp_path, monkeypatch, capsys):
    """Only `evaluate` took --device: a config of `device: cuda` could not train on a machine
    without CUDA but by editing it. `--device cpu` wins over it, as --seed does over its seed,
    and the run's config.yaml and metrics record where it trained."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tmp_path / "cuda.yaml"
    cfg.write_text(Path(TINY).read_text().replace("device: cpu", "device: cuda"))
    args = [*_training_commands(tmp_path)[command], "--data", tiny_store.dir, "--config", cfg, "--steps", "2", "--no-progress"]
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "cuda")
    assert code == 2 and "device: 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu': the config's device, or --device)" in error_line(err)
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "cpu", "--device", "cpu")
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "cpu" / "config.yaml").read_text())["device"] == "cpu"
    assert json.loads((tmp_path / "cpu" / "metrics.json").read_text())["environment"]["device"] == "cpu"


def _device_commands(tmp_path, store) -> dict[str, list]:
    """Every command that takes --device, with its other required options (none need exist:
    the value is refused while parsing, before any of them is read)."""
    missing = tmp_path / "missing"
    trains = ["--data", store, "--config", missing, "--out", tmp_path / "o"]
    return {
        **{name: [*args, *trains] for name, args in _training_commands(tmp_path).items()},
        "evaluate": ["evaluate", "--ckpt", missing, "--data", store],
        "search": ["search", "--budget", "smoke", "--out", tmp_path / "o"],
        "study rank": ["study", "rank", "--supernet", missing, "--data", store, "--out", tmp_path / "o"],
        "embed search": ["embed", "search", "--data", store, "--out", tmp_path / "o", "--budget-params", "100"],
    }


@pytest.mark.parametrize("command", ["supernet", "subnet", "baseline", "evaluate", "search", "study rank", "embed search"])
def test_a_bad_device_is_one_error_line_naming_the_values(command, tmp_path, monkeypatch, capsys):
    """Refused while the command line is parsed, before anything runs or is written, in one
    line that lists the devices there are (evaluate's own check said so in other words)."""
    code, _, err = run(monkeypatch, capsys, *_device_commands(tmp_path, tmp_path / "data")[command], "--device", "tpu")
    assert code == 2
    assert "Invalid value for '--device'" in error_line(err) and "'tpu' is not one of 'auto', 'cpu', 'cuda'" in error_line(err)
    assert not (tmp_path / "o").exists()


def test_supernet_then_inherited_subnet(tiny_store, tmp_path, monkeypatch, capsys):
    pytest.importorskip("recnas.supernet").Supernet
    from recnas.space import get_space
    from recnas.space.samplers import make_sampler

    arch = tmp_path / "arch.json"
    make_sampler("single-op-any-conn", get_space("small-tiny"), 1).sample().save(arch)
    sn = tmp_path / "sn"
    common = ["--data", tiny_store.dir, "--config", TINY, "--space", "small-tiny", "--steps", "3"]
    code, _, err = run(monkeypatch, capsys, "supernet", "train", *common, "--out", sn)
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", sn / "model.pt", "--data", tiny_store.dir)
    assert code == 2 and "--arch" in error_line(err)
    code, stdout, err = run(monkeypatch, capsys, "evaluate", "--ckpt", sn / "model.pt", "--data", tiny_store.dir, "--arch", arch)
    assert code == 0 and "logloss" in stdout, err
    code, _, err = run(monkeypatch, capsys, "subnet", "train", *common, "--arch", arch, "--out", tmp_path / "sub", "--inherit", sn / "model.pt")
    assert code == 0, err
    before = (tmp_path / "sub" / "checkpoint.pt").read_bytes()
    code, _, err = run(monkeypatch, capsys, "subnet", "train", *common, "--arch", arch, "--out", tmp_path / "sub", "--inherit", sn / "model.pt", "--resume")
    assert code == 2 and "pass one of them" in error_line(err)  # --inherit is not silently ignored
    assert (tmp_path / "sub" / "checkpoint.pt").read_bytes() == before
    code, _, err = run(monkeypatch, capsys, "subnet", "train", *common, "--arch", arch, "--out", tmp_path / "sub2", "--inherit", tmp_path / "sub" / "model.pt")
    assert code == 2 and "needs a supernet checkpoint" in error_line(err)
    # the same space with a CIN head inherits the supernet's blocks (the head starts fresh) ...
    spaces = {}
    for name, extra in (("head", {"cin_head": [4, 2]}), ("wider", {"emb_dim": 16})):
        spaces[name] = tmp_path / f"{name}.yaml"
        spaces[name].write_text(yaml.safe_dump({**get_space("small-tiny").model_dump(mode="json"), **extra}))
    with_head = ["--data", tiny_store.dir, "--config", TINY, "--space", spaces["head"], "--steps", "3", "--arch", arch, "--inherit", sn / "model.pt"]
    code, _, err = run(monkeypatch, capsys, "subnet", "train", *with_head, "--out", tmp_path / "sub3")
    assert code == 0, err
    from recnas.train.model_factory import load_trained

    assert load_trained(tmp_path / "sub3" / "model.pt")[0].cin_head is not None
    # ... another space is refused, naming what differs
    other = ["--data", tiny_store.dir, "--config", TINY, "--space", spaces["wider"], "--steps", "3", "--arch", arch, "--inherit", sn / "model.pt"]
    code, _, err = run(monkeypatch, capsys, "subnet", "train", *other, "--out", tmp_path / "sub4")
    assert code == 2 and "trained on another space than 'small-tiny' (differs in emb_dim)" in error_line(err)


def as_before_embedding_weight_decay(path):
    """Rewrite a checkpoint's training config as a recnas before 2026-12-03 saved it: without
    `embedding_weight_decay` (every config saved since holds it)."""
    import torch

    payload = torch.load(path, weights_only=True)
    payload["config"].pop("embedding_weight_decay")
    payload.pop("layout")  # recorded since 2026-12-07
    torch.save(payload, path)


def test_a_supernet_of_the_leading_slice_paths_is_refused_where_paths_fold_now(tmp_path, monkeypatch, capsys):
    """A supernet trained by a recnas before 2026-12-03 gave a path of fewer tokens than fields
    the leading rows of the raw fields' projection; this one folds every field onto them, so
    evaluate --arch, --inherit, the rank study and --resume went on silently with other subnets
    than it trained. Refused in one line, where some path folds (6 fields, 4 or 8 tokens); with 4
    fields none does, and it is read as before."""
    from recnas.space import get_space
    from tests.conftest import make_tiny_store
    from recnas.space.samplers import make_sampler

    arch = tmp_path / "arch.json"
    make_sampler("single-op-any-conn", get_space("small-tiny"), 1).sample().save(arch)
    for fields, folds in ((6, True), (4, False)):
        store = make_tiny_store(tmp_path / f"d{fields}", vocab_sizes=(7, 11, 5, 9, 4, 6)[:fields])
        sn = tmp_path / f"sn{fields}"
        common = ["--data", store.dir, "--config", TINY, "--space", "small-tiny"]
        code, _, err = run(monkeypatch, capsys, "supernet", "train", *common, "--steps", "2", "--out", sn)
        assert code == 0, err
        for name in ("model.pt", "checkpoint.pt"):
            as_before_embedding_weight_decay(sn / name)
        before = (sn / "checkpoint.pt").read_bytes()
        calls = [
            ("evaluate", "--ckpt", sn / "model.pt", "--data", store.dir, "--arch", arch),
            ("subnet", "train", *common, "--steps", "2", "--arch", arch, "--inherit", sn / "model.pt", "--out", tmp_path / f"sub{fields}"),
            ("supernet", "train", *common, "--steps", "4", "--out", sn, "--resume"),
        ]
        for args in calls:
            code, _, err = run(monkeypatch, capsys, *args)
            if folds:
                assert code == 2 and "a supernet trained by a recnas before 2026-12-03, whose paths of fewer tokens than the 6 fields took the leading rows" in error_line(err), args
                assert error_line(err).endswith("train the supernet again with this recnas (--overwrite)")
                assert (sn / "checkpoint.pt").read_bytes() == before
            else:
                assert code == 0, err

def test_a_supernet_resumed_without_its_sampler_names_the_sampler(tiny_store, tmp_path, monkeypatch, capsys):
    # "checkpoint is for a different model" sent the user looking for a change to the model
    pytest.importorskip("recnas.supernet")
    common = ["supernet", "train", "--data", tiny_store.dir, "--config", TINY, "--space", "small-tiny", "--out", tmp_path / "sn"]
    code, _, err = run(monkeypatch, capsys, *common, "--steps", "2", "--sampler", "any-path")
    assert code == 0, err
    before = (tmp_path / "sn" / "checkpoint.pt").read_bytes()
    code, _, err = run(monkeypatch, capsys, *common, "--steps", "4", "--resume")
    assert code == 2
    assert "trained with the 'any-path' path sampler, this run would resume it with 'single-op-any-conn'" in error_line(err)
    assert "(--sampler any-path)" in error_line(err)
    assert (tmp_path / "sn" / "checkpoint.pt").read_bytes() == before
    code, _, err = run(monkeypatch, capsys, *common, "--steps", "4", "--resume", "--sampler", "any-path")
    assert code == 0, err


def test_compile_on_a_cpu_without_a_cxx_compiler_is_one_error_line(tiny_store, tmp_path, monkeypatch, capsys):
    # torch.compile's inductor builds C++ kernels on the CPU: the first step failed with a
    # traceback of ~140 lines (InductorError: InvalidCxxCompiler)
    cpp_builder = pytest.importorskip("torch._inductor.cpp_builder")
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))
    cpp_builder.cpp_compiler_search.cache_clear()  # it remembers the compiler it found
    config = tmp_path / "compile.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(Path(TINY).read_text()), "compile": True}))
    try:
        code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", config, "--out", tmp_path / "run", "--steps", "2")
    finally:
        cpp_builder.cpp_compiler_search.cache_clear()
    assert code == 2
    assert "compile: true needs a C/C++ compiler" in error_line(err) and "no-such-g++" in err and "set compile: false" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_unusable_paths_and_seeds_are_one_error_line(tiny_store, tmp_path, monkeypatch, capsys):
    """An --out under a file, a binary --arch file, a negative --seed: no traceback, nothing written."""
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out, message in ((afile, "exists and is not a directory"), (afile / "sub", "afile is not a directory")):
        code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", out, "--steps", 2)
        assert code == 2 and f"--out {out}" in error_line(err) and message in err
    assert afile.read_text() == "keep"
    arch = tmp_path / "arch.json"
    arch.write_bytes(b"\x89PNG\r\n\x1a\n\xff\x00")
    code, _, err = run(monkeypatch, capsys, "subnet", "train", "--data", tiny_store.dir, "--arch", arch, "--space", "small-tiny", "--config", TINY, "--out", tmp_path / "s")
    assert code == 2 and "not a readable architecture file" in error_line(err)
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", tmp_path / "n", "--seed", -1)
    assert code == 2 and "--seed" in err and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", tmp_path / "n", "--resume", "--overwrite")
    assert code == 2 and "pass one of them" in error_line(err)
    assert not (tmp_path / "s").exists() and not (tmp_path / "n").exists()


def test_training_into_an_out_another_run_is_writing_is_refused(tiny_store, tmp_path, monkeypatch, capsys):
    """A second training run on a busy --out would interleave checkpoints with the first: one
    error line, exit 2, and the busy folder untouched. Once released, the same command works."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ("baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", out, "--steps", 2, "--no-progress")
    with locked_elsewhere(out):
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and f"--out {out} is being written by another recnas run" in error_line(err)
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert (out / "model.pt").is_file() and not (tmp_path / ".run.lock").exists()


def test_evaluate_refuses_a_json_out_that_is_one_of_its_inputs(tiny_store, tmp_path, monkeypatch, capsys):
    """The metrics used to replace the checkpoint (or the dataset's meta.json) with exit 0."""
    out = tmp_path / "lr"
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", out, "--steps", 2, "--no-progress")
    assert code == 0, err
    meta = tiny_store.dir / "meta.json"
    before = {p: p.read_bytes() for p in (out / "model.pt", meta)}
    for target in (out / "model.pt", out / ".." / "lr" / "model.pt", meta):
        code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, "--json-out", target)
        assert code == 2 and f"--json-out {target}" in error_line(err) and "would replace it" in err
    assert {p: p.read_bytes() for p in before} == before
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, "--json-out", out / "eval.json")
    assert code == 0 and (out / "eval.json").is_file(), err


def test_evaluate_replaces_only_its_own_outputs(tiny_store, tmp_path, monkeypatch, capsys):
    """An output naming a file that is no input was replaced whatever it held, exit 0: another
    run's checkpoint.pt, the run's own metrics.json or config.yaml, a CSV of the user's. Only a
    record or predictions this command wrote (a re-run) are replaced."""
    import numpy as np

    out = tmp_path / "lr"
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", out, "--steps", 2, "--no-progress")
    assert code == 0, err
    (tmp_path / "mine.csv").write_text("user,score\nu1,3\n")
    np.save(tmp_path / "ids.npy", np.arange(5))
    targets = {"--json-out": [out / "checkpoint.pt", out / "metrics.json", out / "config.yaml"], "--predictions-out": [tmp_path / "mine.csv", tmp_path / "ids.npy"]}
    before = {p: p.read_bytes() for paths in targets.values() for p in paths}
    for flag, paths in targets.items():
        for target in paths:
            code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, flag, target)
            assert code == 2 and f"{flag} {target} exists and holds no" in error_line(err) and "choose another file" in err
    assert {p: p.read_bytes() for p in before} == before
    args = ["evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, "--json-out", tmp_path / "e.json", "--predictions-out", tmp_path / "p.npy"]
    for _ in range(2):  # a re-run replaces what the first wrote
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["rows"] == 60 and np.load(tmp_path / "p.npy").shape == (60,)


def test_an_architecture_outside_the_space_names_the_file_and_the_space(tiny_store, tmp_path, monkeypatch, capsys):
    block = {"dense_ops": ["fc"], "sparse_ops": ["attention"], "dense_inputs": [0], "sparse_inputs": [0], "dense_dim": 8, "sparse_dim": 4}
    arch = tmp_path / "best_arch.json"
    arch.write_text(json.dumps({"blocks": [block] * 3}))
    code, _, err = run(monkeypatch, capsys, "subnet", "train", "--data", tiny_store.dir, "--arch", arch, "--space", "small-tiny", "--config", TINY, "--out", tmp_path / "s")
    line = error_line(err)
    assert code == 2 and f"{arch}: the architecture does not fit the space 'small-tiny': block 0: sparse op 'attention' not in space" in line
    assert not (tmp_path / "s" / "model.pt").exists()


def test_a_search_s_architecture_given_with_another_space_names_its_space(tiny_store, tmp_path, monkeypatch, capsys):
    """A search's best_arch.json fits only the space it was searched in: the error names the
    space.yaml beside it, or, for a run folder of a recnas before 2026-12-02 (which wrote none),
    how to have it written; it said only that the architecture did not fit."""
    block = {"dense_ops": ["fc"], "sparse_ops": ["attention"], "dense_inputs": [0], "sparse_inputs": [0], "dense_dim": 8, "sparse_dim": 4}
    run_dir = tmp_path / "search"
    run_dir.mkdir()
    arch = run_dir / "best_arch.json"
    arch.write_text(json.dumps({"blocks": [block] * 3}))
    (run_dir / "config.yaml").write_text("seed: 0\n")
    (run_dir / "search.sqlite").write_bytes(b"")
    args = ["subnet", "train", "--data", tiny_store.dir, "--arch", arch, "--space", "small-tiny", "--config", TINY, "--out", tmp_path / "s"]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and error_line(err).endswith(
        f"left no space.yaml of its space: run that `recnas search` again (its options, --out {run_dir}), which goes on from what is there and writes it, then pass --space {run_dir / 'space.yaml'}")
    (run_dir / "space.yaml").write_text("name: full\n")
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and error_line(err).endswith(f"searched the space in {run_dir / 'space.yaml'}: pass --space {run_dir / 'space.yaml'}")


@pytest.mark.parametrize(
    "args, option, reason",
    [
        # click's own words, which its versions put otherwise ("0 is not in the range x>=1." with Typer 0.27's; "-1 is not in the range 0<=x<=4294967295." for a bounded one)
        (("supernet", "train", "--nproc", "0"), "'--nproc'", "greater than or equal to 1|range x>=1"),
        (("search", "--seed", "-1"), "'--seed'", "greater than or equal to 0|range x>=0|range 0<=x"),
        (("data", "synth", "--out", "o", "--rows", "abc"), "'--rows'", "valid integer|valid int"),
        (("data", "prepare", "--raw", "r", "--out", "o"), "'--dataset'", "criteo, avazu, kdd12, csv"),
        (("data", "frobnicate"), "'frobnicate'", "No such command"),
    ],
)
def test_a_bad_command_line_is_one_error_line(monkeypatch, capsys, args, option, reason):
    """Click's usage errors (an invalid option value, a missing option, an unknown command) come
    out like every other user error: one `error:` line naming the option and the reason, exit 2,
    no boxed usage panel."""
    code, out, err = run(monkeypatch, capsys, *args)
    line = error_line(err)
    assert code == 2 and option in line and any(r in line for r in reason.split("|")) and "--help" in line
    assert err.strip() == line and out == ""
    assert not any(c in err for c in "╭│╰") and "Usage:" not in err


@pytest.mark.parametrize(
    "args, option",
    [
        (("data", "prepare", "--dataset", "criteo", "--raw", "", "--out", "o"), "'--raw'"),  # said ".: raw file is not a regular file"
        (("data", "prepare", "--dataset", "criteo", "--raw", "r", "--out", ""), "'--out'"),  # said ". holds ... is not a recnas store"
        (("data", "synth", "--out="), "'--out'"),
        (("baseline", "train", "lr", "--data", "", "--config", "c", "--out", "o"), "'--data'"),
        (("search", "--config", ""), "'--config'"),  # said ".: cannot read config file (Is a directory)"
        (("search", "show", ""), "'run'"),
    ],
)
def test_an_empty_path_is_named_not_read_as_the_current_directory(monkeypatch, capsys, tmp_path, args, option):
    monkeypatch.chdir(tmp_path)  # an empty path was Path("") == Path("."): the current directory
    code, _, err = run(monkeypatch, capsys, *args)
    line = error_line(err)
    assert code == 2 and f"Invalid value for {option}: the path is empty" in line and "'.'" not in line
    assert list(tmp_path.iterdir()) == []


def test_help_and_no_args_still_print_help(monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "data", "synth", "--help")
    assert code == 0 and "--rows" in out and "error:" not in err
    code, out, err = run(monkeypatch, capsys, "data")
    assert code == 2 and "synth" in out + err and "error:" not in err
    code, out, err = run(monkeypatch, capsys)
    assert code == 2 and "supernet" in out + err and "error:" not in err


def test_version_prints_the_version_of_the_package(monkeypatch, capsys):
    """`recnas --version` was "No such option: --version", exit 2; it is pyproject.toml's version."""
    import tomllib

    import recnas

    code, out, err = run(monkeypatch, capsys, "--version")
    assert (code, out, err) == (0, f"recnas {recnas.__version__}\n", "")
    pyproject = tomllib.loads((CONFIGS.parent / "pyproject.toml").read_text())
    assert recnas.__version__ == pyproject["project"]["version"]


@pytest.mark.parametrize("args", [("-h",), ("search", "-h"), ("search", "show", "-h"), ("data", "synth", "-h"), ("embed", "apply", "-h")])
def test_dash_h_is_help_as_well(monkeypatch, capsys, args):
    """`recnas search -h` was "No such option: -h"; it prints the help --help prints."""
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 0 and err == ""
    assert out == run(monkeypatch, capsys, *args[:-1], "--help")[1]


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 3488800000000 bytes")])
def test_out_of_memory_is_one_error_line(monkeypatch, capsys, exc):
    import recnas.cli as cli

    def app(**_):
        raise exc

    monkeypatch.setattr(cli, "app", app)
    code, _, err = run(monkeypatch, capsys)
    assert code == 1 and "error: out of memory" in error_line(err) and "lower the batch size" in err


def test_other_runtime_errors_are_not_dressed_up_as_user_errors(monkeypatch, capsys):
    """A bug must keep its traceback: only out-of-memory errors are turned into one line."""
    import recnas.cli as cli

    def app(**_):
        raise RuntimeError("shape mismatch in a kernel")

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        cli.main()


def test_a_short_run_of_a_shipped_config_names_the_warmup_flag(tiny_store, tmp_path, monkeypatch, capsys):
    """The shipped configs warm up for 1,000 steps: `--steps 5` was refused with no way to lower
    the warmup from the command line; `--warmup-steps` is that way, and the refusal names it."""
    shipped = str(CONFIGS / "baseline.yaml")
    args = ["baseline", "train", "lr", "--data", tiny_store.dir, "--config", shipped, "--steps", "5"]
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "a")
    assert code == 2 and f"the 1000 warmup_steps of {shipped} would outlast the 5 steps of this run (--steps 5)" in error_line(err)
    assert "give --warmup-steps of at most 5, or more --steps" in error_line(err)
    assert not (tmp_path / "a").exists()
    code, _, err = run(monkeypatch, capsys, *args, "--warmup-steps", "2", "--out", tmp_path / "b")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert saved["warmup_steps"] == 2 and saved["max_steps"] == 5


def test_a_warmup_longer_than_an_epoch_run_is_refused(tiny_store, tmp_path, monkeypatch, capsys):
    """--steps 5 with 1,000 warmup steps is refused; 1 epoch of a few steps with them trained
    the whole run at a fraction of its lr, recording that lr in config.yaml."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epochs: 1\nbatch_size: 256\ndevice: cpu\n")
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", cfg, "--warmup-steps", "1000", "--out", tmp_path / "a")
    assert code == 2 and "--warmup-steps 1000 would outlast the" in error_line(err) and "give --warmup-steps of at most" in error_line(err)
    assert not (tmp_path / "a").exists()
    cfg.write_text("epochs: 1\nbatch_size: 256\ndevice: cpu\nwarmup_steps: 1000\n")  # the YAML's own warmup: named as such
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", cfg, "--out", tmp_path / "a")
    assert code == 2 and f"the 1000 warmup_steps of {cfg} would outlast the" in error_line(err)
    assert not (tmp_path / "a").exists()
    cfg.write_text("max_steps: 5\nbatch_size: 256\ndevice: cpu\n")  # a run of max_steps: named, not its epochs
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", cfg, "--warmup-steps", "10", "--out", tmp_path / "a")
    assert code == 2 and f"--warmup-steps 10 would outlast the 5 steps of this run (max_steps of {cfg})" in error_line(err)
    assert not (tmp_path / "a").exists()


def test_resume_with_another_warmup_is_refused_and_keeps_the_run(tiny_store, tmp_path, monkeypatch, capsys):
    """A finished run "resumed" with another --warmup-steps (and no more steps) trained nothing
    and recorded the new warmup in config.yaml and model.pt for weights trained without it."""
    args = ["baseline", "train", "lr", "--data", tiny_store.dir, "--config", str(CONFIGS / "baseline.yaml"), "--steps", "5", "--out", tmp_path / "a"]
    code, _, err = run(monkeypatch, capsys, *args, "--warmup-steps", "0")
    assert code == 0, err
    before = {f: (tmp_path / "a" / f).read_bytes() for f in ("config.yaml", "model.pt", "checkpoint.pt")}
    code, _, err = run(monkeypatch, capsys, *args, "--warmup-steps", "3", "--resume")
    assert code == 2 and "cannot resume with a changed config (warmup_steps: 0 -> 3); resume it with --warmup-steps 0 on the training command's line" in error_line(err)
    assert before == {f: (tmp_path / "a" / f).read_bytes() for f in before}


def test_resume_without_a_checkpoint_beside_a_model_points_to_overwrite(tiny_store, tmp_path, monkeypatch, capsys):
    """A model.pt without its checkpoint.pt: --resume said "run without --resume first", which
    was then refused because --out holds a run; each pointed at the other."""
    args = ["baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--steps", "3", "--out", tmp_path / "a"]
    assert run(monkeypatch, capsys, *args)[0] == 0
    (tmp_path / "a" / "checkpoint.pt").unlink()
    code, _, err = run(monkeypatch, capsys, *args, "--resume")
    assert code == 2 and "holds a model.pt without the checkpoint that continues its run: pass --overwrite" in error_line(err)
    code, _, err = run(monkeypatch, capsys, *args[:-1], tmp_path / "b", "--resume")  # nothing there at all
    assert code == 2 and "nothing to resume; run without --resume first" in error_line(err)


def test_scoring_data_prepared_with_ids_of_its_own_points_to_vocab_from(tmp_path, monkeypatch, capsys):
    """The next day's file prepared without --vocab-from: evaluate listed both stores' vocabulary
    sizes and stopped there, with no word of the way on that docs/data.md gives."""
    from tests.test_prepare import criteo_rows, write_lines

    day1, day2 = write_lines(tmp_path / "day1.txt", criteo_rows(300)), write_lines(tmp_path / "day2.txt", criteo_rows(90, seed=7))
    for raw, out, extra in ((day1, "s1", []), (day2, "s2", ["--split", "none"]), (day2, "h", ["--split", "none", "--hash-buckets", "5"]), (day2, "s3", ["--split", "none", "--vocab-from", tmp_path / "h"])):
        code, _, err = run(monkeypatch, capsys, "data", "prepare", "--dataset", "criteo", "--raw", raw, "--out", tmp_path / out, *extra)
        assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tmp_path / "s1", "--config", TINY, "--out", tmp_path / "lr", "--steps", 3, "--no-progress")
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", tmp_path / "lr" / "model.pt", "--data", tmp_path / "s2")
    assert code == 2 and "the model was trained on data with" in error_line(err) and "prepare it with --vocab-from that store" in error_line(err), err
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", tmp_path / "lr" / "model.pt", "--data", tmp_path / "s3")
    assert code == 2 and f"its ids are those of {tmp_path / 'h'} (--vocab-from), not of the store the model was trained on" in error_line(err), err


def test_scoring_new_data_with_a_trained_model(tmp_path, monkeypatch, capsys):
    """Day 1 trains, day 2 is encoded with day 1's vocabulary and scored row by row."""
    import numpy as np

    from recnas.data.store import CTRStore
    from recnas.train.metrics import predict
    from recnas.train.model_factory import load_trained
    from tests.test_prepare import criteo_rows, write_lines

    day1, day2 = write_lines(tmp_path / "day1.txt", criteo_rows(300)), write_lines(tmp_path / "day2.txt", criteo_rows(90, seed=7))
    code, _, err = run(monkeypatch, capsys, "data", "prepare", "--dataset", "criteo", "--raw", day1, "--out", tmp_path / "s1", "--split", "sequential")
    assert code == 0, err
    code, out, err = run(monkeypatch, capsys, "data", "prepare", "--dataset", "criteo", "--raw", day2, "--out", tmp_path / "s2", "--vocab-from", tmp_path / "s1", "--split", "none")
    assert code == 0 and "test 90" in out and "unseen there" in out, err
    assert "splits: train 0, val 0, test 90 (pos " in out, out  # was "train 0 (pos 0.0000)": no rows, not a rate of 0
    run_dir = tmp_path / "lr"
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tmp_path / "s1", "--config", TINY, "--out", run_dir, "--steps", 3, "--no-progress")
    assert code == 0, err

    ckpt, preds = run_dir / "model.pt", tmp_path / "p" / "day2.npy"
    code, out, err = run(monkeypatch, capsys, "evaluate", "--ckpt", ckpt, "--data", tmp_path / "s2", "--predictions-out", preds)
    assert code == 0 and "(90 rows)" in out and f"wrote 90 click probabilities to {preds}" in out, err
    p = np.load(preds)
    assert p.dtype == np.float32 and p.shape == (90,) and ((p >= 0) & (p <= 1)).all()
    model, _, _ = load_trained(ckpt)
    _, logits = predict(model, CTRStore(tmp_path / "s2").split("test"))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", ckpt, "--data", tmp_path / "s2", "--predictions-out", tmp_path / "day2.csv")
    assert code == 0, err
    lines = (tmp_path / "day2.csv").read_text().splitlines()
    assert lines[0] == "p" and len(lines) == 91
    np.testing.assert_array_equal(np.array(lines[1:], np.float32), p)  # the same numbers, exactly
    code, out, err = run(monkeypatch, capsys, "evaluate", "--ckpt", ckpt, "--data", tmp_path / "s2", "--split", "train", "--predictions-out", tmp_path / "none.npy")
    assert code == 0 and "(0 rows): logloss n/a" in out, err  # an empty split: nothing to score
    assert err.strip() == f"warning: the train split of {tmp_path / 's2'} has no rows; its rows are in test: pass --split test"
    assert np.load(tmp_path / "none.npy").shape == (0,)

    before = {f: f.read_bytes() for f in (ckpt, tmp_path / "s2" / "meta.json", preds)}
    monkeypatch.setattr("recnas.train.metrics.predict", lambda *a, **k: pytest.fail("evaluated although --predictions-out is unusable"))
    for target, message in [
        (tmp_path / "p.txt", "unknown format .txt; name a .npy (float32) or .csv"),
        (tmp_path / "p", "is a directory"),
        (tmp_path / "s2" / "test" / "label.npy", "is a file of the dataset --data"),
        (tmp_path / "s2" / "p.csv", "is a file of the dataset --data"),
        (run_dir / "model.npy", None),
    ]:
        if message is None:  # the checkpoint itself, under a name with the right suffix
            (run_dir / "model.npy").symlink_to(ckpt)
            message = "is an input of this command; writing the predictions there would replace it"
        code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", run_dir / "model.npy" if "input" in message else ckpt, "--data", tmp_path / "s2", "--predictions-out", target)
        assert code == 2 and f"--predictions-out {target}" in error_line(err) and message in err
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", ckpt, "--data", tmp_path / "s2", "--predictions-out", preds, "--json-out", preds)
    assert code == 2 and "both" in error_line(err)
    assert {f: f.read_bytes() for f in before} == before and not (tmp_path / "s2" / "p.csv").exists()

    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tmp_path / "s2", "--config", TINY, "--out", tmp_path / "bad", "--steps", 3, "--no-progress")
    assert code == 2 and "the train split has no rows" in error_line(err) and "--split none" in err
    # the main job refuses it too, before its run folder gets anything
    code, _, err = run(monkeypatch, capsys, "search", "--data", tmp_path / "s2", "--budget", "smoke", "--out", tmp_path / "run", "--no-progress")
    assert code == 2 and "--split none" in error_line(err) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["baseline", "train", "lr"], ["supernet", "train"], ["subnet", "train", "--arch", "a.json"]])
def test_steps_below_one_names_the_option(command, tiny_store, tmp_path, monkeypatch, capsys):
    """`--steps 0` was reported as "command line: key 'max_steps'", a key the user never typed."""
    code, _, err = run(monkeypatch, capsys, *command, "--data", tiny_store.dir, "--config", TINY, "--out", tmp_path / "a", "--steps", "0")
    assert code == 2 and "'--steps'" in error_line(err) and "max_steps" not in error_line(err)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("command", [["baseline", "train", "lr", "--config", TINY], ["supernet", "train", "--config", TINY], ["study", "rank", "--supernet", "missing.pt"]])
@pytest.mark.parametrize("inside", [False, True])
def test_an_output_folder_at_or_inside_a_data_store_is_refused(command, inside, tiny_store, tmp_path, monkeypatch, capsys):
    """Model files were written beside the data, after which the store's --overwrite was refused."""
    before = sorted(p.name for p in tiny_store.dir.iterdir())
    out = tiny_store.dir / "run" if inside else tiny_store.dir
    code, _, err = run(monkeypatch, capsys, *command, "--data", tiny_store.dir, "--out", out)
    assert code == 2 and f"--out {out} {'is inside' if inside else 'is'} the recnas store {tiny_store.dir.resolve()}" in error_line(err)
    assert sorted(p.name for p in tiny_store.dir.iterdir()) == before


def test_threads_trains_with_that_many_and_metrics_record_where_it_trained(tiny_store, tmp_path, monkeypatch, capsys):
    """On the CPU the thread count decides the rounding (and so the model): `--threads` sets it
    for the command alone, and metrics.json / model.pt say what trained the model."""
    import torch

    from recnas.train import load_trained

    before = torch.get_num_threads()
    seen = []
    from recnas.train import trainer as trainer_mod

    fit = trainer_mod.Trainer.fit
    monkeypatch.setattr(trainer_mod.Trainer, "fit", lambda self, *a, **k: (seen.append(torch.get_num_threads()), fit(self, *a, **k))[1])
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", tmp_path / "t", "--steps", 2, "--threads", before + 1)
    assert code == 0, err
    assert seen == [before + 1] and torch.get_num_threads() == before
    env = json.loads((tmp_path / "t" / "metrics.json").read_text())["environment"]
    assert env["cpu_threads"] == before + 1 and env["world_size"] == 1 and env["device"] == "cpu" and env["torch"] == torch.__version__
    assert load_trained(tmp_path / "t" / "model.pt")[2]["metrics"]["environment"] == env
    code, _, err = run(monkeypatch, capsys, "subnet", "train", "--data", tiny_store.dir, "--arch", tmp_path / "a.json", "--config", TINY, "--out", tmp_path / "z", "--threads", 0)
    assert code == 2 and "--threads" in error_line(err)


def test_an_interrupted_overwrite_leaves_no_model_of_the_replaced_run(tiny_store, tmp_path, monkeypatch, capsys):
    """--overwrite stopped after the new run's first checkpoint left the replaced run's model.pt
    and metrics.json beside it: `evaluate --ckpt OUT/model.pt` scored the old model as if it
    were the run in OUT. Stopped before any checkpoint, the replaced run stays whole."""
    from recnas.train.trainer import Trainer

    out, cfg = tmp_path / "a", tmp_path / "cfg.yaml"
    cfg.write_text((CONFIGS / "train-tiny.yaml").read_text() + "checkpoint_every: 2\n")
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", cfg, "--out", out, "--steps", "3")
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = ["baseline", "train", "dlrm", "--data", tiny_store.dir, "--config", cfg, "--out", out, "--steps", "6", "--no-progress"]

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_train_step", ctrl_c)  # before the first checkpoint
        assert run(m, capsys, *again, "--overwrite")[0] == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    save = Trainer.save_checkpoint

    def save_then_ctrl_c(self, path=None):
        save(self, path)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "save_checkpoint", save_then_ctrl_c)  # at step 2
        assert run(m, capsys, *again, "--overwrite")[0] == 130
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml"]
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir)
    assert code == 2 and "checkpoint not found" in error_line(err)
    code, stdout, err = run(monkeypatch, capsys, *again, "--resume")
    assert code == 0 and "trained 6 steps" in stdout, err
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, "--json-out", tmp_path / "e.json")
    assert code == 0 and json.loads((tmp_path / "e.json").read_text())["step"] == 6, err


def test_a_killed_runs_half_written_checkpoint_is_removed_when_the_run_goes_on(tiny_store, tmp_path, monkeypatch, capsys):
    """A hard kill (SIGTERM, SIGKILL) mid-write leaves the checkpoint's temp file in --out; the
    search job swept its run folder of them, a training command did not, so each kill left one
    more. The next run on the folder removes them, and nothing else."""
    out, cfg = tmp_path / "a", tmp_path / "cfg.yaml"
    cfg.write_text((CONFIGS / "train-tiny.yaml").read_text())
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", cfg, "--out", out, "--steps", "2", "--no-progress")
    assert code == 0, err
    stale, kept = out / ".checkpoint.pt.tmp-0123abcd", out / "notes.txt"
    stale.write_bytes(b"")
    kept.write_text("mine")
    code, stdout, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", cfg, "--out", out, "--steps", "4", "--resume", "--no-progress")
    assert code == 0 and "trained 4 steps" in stdout, err
    assert not stale.exists() and kept.read_text() == "mine"


def test_evaluate_names_the_step_of_the_weights_it_scored(tiny_store, tmp_path, monkeypatch, capsys):
    """A model.pt under restore_best holds its best evaluation's weights, but its `step` is the
    run's last, which `evaluate --json-out` reported as the evaluated model's step."""
    from recnas.train import load_checkpoint, save_checkpoint

    out = tmp_path / "lr"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("batch_size: 32\nmax_steps: 12\neval_every: 3\ndevice: cpu\n")
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", cfg, "--out", out)
    assert code == 0, err
    payload = load_checkpoint(out / "model.pt")
    payload["metrics"]["best_val"]["step"] = 6  # as a run whose best evaluation came before its last step
    save_checkpoint(out / "model.pt", payload)
    expected = {"model.pt": 6, "checkpoint.pt": 12}  # checkpoint.pt: the last weights
    for name, step in expected.items():
        report = tmp_path / f"{name}.json"
        code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / name, "--data", tiny_store.dir, "--json-out", report)
        assert code == 0, err
        got = json.loads(report.read_text())
        assert got["step"] == step and got["run_steps"] == 12, name
    cfg.write_text("batch_size: 32\nmax_steps: 12\neval_every: 3\ndevice: cpu\nrestore_best: false\n")
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", cfg, "--out", out, "--overwrite")
    assert code == 0, err
    payload = load_checkpoint(out / "model.pt")
    payload["metrics"]["best_val"]["step"] = 6  # without restore_best model.pt holds the last weights whatever the best was
    save_checkpoint(out / "model.pt", payload)
    code, _, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, "--json-out", tmp_path / "last.json")
    assert code == 0 and json.loads((tmp_path / "last.json").read_text())["step"] == 12, err


def test_training_on_a_train_split_of_one_class_is_warned_about(tmp_path, monkeypatch, capsys):
    """A store whose labels are all 0 trained to a validation log loss of 0.00000 (AUC n/a) with
    no word that the model had nothing to learn; the training commands now say so first."""
    from recnas.data.schema import SPLITS, DatasetMeta
    from recnas.data.store import SplitArrays, write_store

    rng = np.random.default_rng(0)
    splits = {s: SplitArrays(rng.normal(size=(n, 1)).astype(np.float32), rng.integers(0, 4, (n, 2)).astype(np.int32), np.zeros(n, np.float32)) for s, n in zip(SPLITS, (64, 8, 8))}
    write_store(tmp_path / "zeros", splits, DatasetMeta(name="zeros", dense_names=["I1"], cat_names=["C1", "C2"], vocab_sizes=[4, 4], rows={}, positive_rate={s: 0.0 for s in SPLITS}))
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tmp_path / "zeros", "--config", TINY, "--out", tmp_path / "o", "--steps", "2", "--no-progress")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3 and f"{tmp_path / 'zeros'}: the train split holds no clicks (every label 0)" in warnings[0], err
    assert "the val split holds no clicks (every label 0): AUC is undefined (n/a) on it" in warnings[1]


@pytest.mark.parametrize("model, lr, warned", [("lr", 10000.0, True), ("dlrm", 0.01, False)])
def test_a_training_that_learnt_nothing_usable_is_warned_about(tiny_store, tmp_path, monkeypatch, capsys, model, lr, warned):
    """At a huge lr the weights stay finite but useless (validation log loss far above the
    click rate's): the summary gave it as one more number, exit 0; it now warns, and a run that
    learnt something does not."""
    from recnas.search.study import base_rate_logloss

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"batch_size: 32\nepochs: 2\nlr: {lr}\ndevice: cpu\n")
    code, out, err = run(monkeypatch, capsys, "baseline", "train", model, "--data", tiny_store.dir, "--config", cfg, "--out", tmp_path / "o", "--no-progress")
    assert code == 0, err
    base = base_rate_logloss(tiny_store.split("train").label, tiny_store.split("val").label)
    warning = f"is above that of predicting the training click rate for every row ({base:.5f}): the model learnt nothing usable; lower the lr or train longer"
    assert (warning in " ".join(err.split())) == warned, err


@pytest.mark.parametrize("restore_best", [False, True])
def test_the_training_summary_says_when_model_pt_holds_the_last_weights(tiny_store, tmp_path, monkeypatch, capsys, restore_best):
    """Under `restore_best: false` the summary line gave the best validation log loss alone
    (0.60129), and `recnas evaluate` of the model.pt it wrote gave the last weights' (0.92894)."""
    from recnas.train import Trainer
    from recnas.train.trainer import FitResult

    result = FitResult(steps=12, epochs=1.0, best_val={"logloss": 0.6, "auc": 0.7, "step": 6}, final_val={"logloss": 0.9, "auc": 0.55, "rows": 60}, train_seconds=1.0, samples_per_s=10.0)
    monkeypatch.setattr(Trainer, "fit", lambda self, **kw: result)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"batch_size: 32\nmax_steps: 12\neval_every: 3\ndevice: cpu\nrestore_best: {str(restore_best).lower()}\n")
    code, out, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", cfg, "--out", tmp_path / "o", "--no-progress")
    line = next(x for x in out.splitlines() if x.startswith("trained 12 steps"))
    assert code == 0 and "best val logloss 0.60000 auc 0.70000" in line, err
    note = "; model.pt holds the last weights (restore_best: false): val logloss 0.90000 auc 0.55000"
    assert line.endswith(note) != restore_best, line


def _cli_commands() -> dict[tuple[str, ...], object]:
    """Every command and group of the CLI (the root too), by its path: `("search", "show")`."""
    import typer

    from recnas.cli import app

    found = {}

    def walk(cmd, path=()):  # Typer's own click (vendored by recent Typers): by duck type
        found[path] = cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app))
    return found


def _param_help(path: tuple[str, ...], name: str) -> str:
    """The help text of option `name` (or argument `name`) of the command at `path`."""
    (param,) = [p for p in _cli_commands()[path].params if name in (*p.opts, p.name)]
    return " ".join(param.help.split())


def test_every_option_of_every_command_says_what_it_does():
    """`study rank --help` listed --progress with no words at all. Groups' options (those of
    `recnas search` itself, `recnas --version`) and arguments count too."""
    found = _cli_commands()
    assert len(found) >= 15
    silent = [f"{' '.join(path)} {p.opts[0]}" for path, cmd in found.items() for p in cmd.params if p.opts[0] != "--help" and not (getattr(p, "help", None) or "").strip()]
    assert silent == []


HEAVY = ("torch", "numpy", "polars", "pyarrow", "matplotlib", "ray")  # seconds to import, torch alone ~2 s
_SHOW_IN_A_FRESH_PROCESS = """
import contextlib, io, json, sys
argvs, heavy, preload = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
for name in preload:
    __import__(name)
from recnas.cli import main
shown = {}
for argv in argvs:
    sys.argv = ["recnas", *argv]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
    shown[" ".join(argv)] = [code, out.getvalue()]
print(json.dumps({"loaded": sorted({m.split(".")[0] for m in sys.modules} & set(heavy)), "shown": shown}))
"""


def _shown_in_a_fresh_process(argvs: list[tuple[str, ...]], cwd: Path, preload: tuple[str, ...] = ()) -> dict:
    """`recnas ARGV` for each of `argvs`, through `recnas.cli.main`, in one fresh Python process
    (after importing `preload`): {"loaded": the HEAVY modules it then held, "shown": {argv:
    [exit code, stdout]}}."""
    import os
    import subprocess

    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": os.pathsep.join([str(CONFIGS.parent), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _SHOW_IN_A_FRESH_PROCESS, json.dumps(argvs), json.dumps(HEAVY), json.dumps(preload)], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return json.loads(r.stdout)


def test_version_and_every_help_load_no_torch_and_print_the_same(tmp_path):
    """`recnas --version` took ~2 s, nearly all of it importing torch (and numpy) as the CLI's
    modules loaded: the command modules import them in the commands now. In a fresh process,
    --version, -h and every command's and group's --help leave torch, numpy, polars, pyarrow,
    matplotlib and ray unloaded, and print what they print in a process where torch and numpy
    were loaded first (as they were before: no default of the help comes from them)."""
    import recnas

    argvs = [("--version",), ("-h",), *[(*path, "--help") for path in _cli_commands() if path]]
    light = _shown_in_a_fresh_process(argvs, tmp_path)
    assert light["loaded"] == []
    heavy = _shown_in_a_fresh_process(argvs, tmp_path, preload=("torch", "numpy"))
    assert heavy["loaded"] == ["numpy", "torch"]
    assert light["shown"] == heavy["shown"] and len(light["shown"]) == len(argvs) >= 17
    assert light["shown"]["--version"] == [0, f"recnas {recnas.__version__}\n"]
    assert light["shown"]["-h"][0] == 0 and "Usage: recnas [OPTIONS] COMMAND" in light["shown"]["-h"][1] and "Weight-sharing NAS for CTR models." in light["shown"]["-h"][1]
    for argv in argvs[2:]:
        code, out = light["shown"][" ".join(argv)]
        assert code == 0 and f"Usage: recnas {' '.join(argv[:-1])} [OPTIONS]" in out, (argv, out)


def test_data_commands_load_no_torch(tmp_path):
    """`recnas data synth` and `data prepare` read, encode and write with numpy, polars and
    pyarrow alone; `recnas.data` imported the loaders, and with them torch: about 1.2 s of a
    2.3 s prepare of 20k rows."""
    raw = tmp_path / "raw.csv"
    raw.write_text("label,x,c\n" + "".join(f"{i % 2},{i},{'ab'[i % 3 == 0]}\n" for i in range(60)))
    (tmp_path / "spec.yaml").write_text("label: label\ndense: [x]\ncategorical: [c]\n")
    shown = _shown_in_a_fresh_process([("data", "synth", "--rows", "2000", "--out", "synth"),
                                       ("data", "prepare", "--dataset", "csv", "--raw", "raw.csv", "--spec", "spec.yaml", "--out", "store")], tmp_path)
    assert [code for code, _ in shown["shown"].values()] == [0, 0], shown["shown"]
    assert (tmp_path / "synth" / "meta.json").is_file() and (tmp_path / "store" / "meta.json").is_file()
    assert "torch" not in shown["loaded"]


@pytest.mark.parametrize("path", [pytest.param(path, id=" ".join(path) or "recnas") for path in _cli_commands()])
def test_every_command_s_help_works_and_lists_its_options(monkeypatch, capsys, path):
    """Each command's --help (and each group's) exits 0 with its usage line and names every
    option and argument of the command, and each subcommand of a group: the commands' imports
    moved into their bodies must leave what --help shows whole."""
    monkeypatch.setenv("COLUMNS", "250")  # one line per option: no name folded
    code, out, err = run(monkeypatch, capsys, *path, "--help")
    assert code == 0 and err == "", err
    assert "Usage: " in out and f"{' '.join(path)} [OPTIONS]".lstrip() in out, out
    cmd = _cli_commands()[path]
    for param in cmd.params:
        shown = param.opts[0] if param.param_type_name == "option" else param.name
        assert shown in out, (shown, out)
    for name in getattr(cmd, "commands", {}):
        assert name in out


def _stated_in_help() -> list[tuple[tuple[str, ...], str, str]]:
    """(command, option, text): what an option's help says of its default or range, as the code
    has it; each help text states it in words, where the option's own default is None."""
    from recnas.data.prepare import DEFAULT_SEED, MAX_HASH_BUCKETS
    from recnas.data.synthetic import MAX_ROWS, MIN_ROWS
    from recnas.embedding.config import EmbedSearchConfig
    from recnas.search.job import PRESETS, JobConfig, load_job_config
    from recnas.search.study import RankStudyConfig

    from recnas.train.config import TrainConfig

    embed, jobs = EmbedSearchConfig(), [load_job_config(budget) for budget in PRESETS]
    warmups = [TrainConfig.from_yaml(CONFIGS / f"{name}.yaml").warmup_steps for name in ("supernet", "subnet", "baseline")]
    tiny = TrainConfig.from_yaml(TINY).warmup_steps

    def same(values):  # a default the help states once, for every preset
        assert len(set(values)) == 1, values
        return values[0]

    return [
        (("data", "prepare"), "--seed", f"default {DEFAULT_SEED}"),
        (("data", "prepare"), "--hash-buckets", f"at most {MAX_HASH_BUCKETS:,}"),
        (("data", "synth"), "--rows", f"{MIN_ROWS:,} to {MAX_ROWS:,}"),
        (("embed", "search"), "--widths", "default: the config's, " + ",".join(map(str, embed.widths))),
        (("embed", "search"), "--sampler", f"default: the config's, {embed.supernet.sampler}"),
        (("embed", "search"), "--seed", f"default: the config's, {embed.seed}"),
        (("search",), "--space", "the --budget preset's: " + ", ".join(f"{budget} {job.space}" for budget, job in zip(PRESETS, jobs))),
        (("search",), "--objective", f"default: {same([j.objective.kind for j in jobs])}"),
        (("search",), "--hardware", f"default: {same([j.hardware for j in jobs])}"),
        (("search",), "--scoring", f"{same([j.scoring for j in jobs])} (inherited weights; default)"),
        (("search",), "--executor", f"{same([j.executor for j in jobs])} (default)"),
        (("search",), "--finalists", f"else {same([j.finalists for j in jobs] + [JobConfig.model_fields['finalists'].default])}"),
        *[(("study", "rank"), "--config", key) for key in RankStudyConfig.model_fields],
        *[(command, "--warmup-steps", f"configs/supernet.yaml, subnet.yaml and baseline.yaml warm up for {same(warmups):,} steps, train-tiny.yaml for {'none' if not tiny else tiny}")
          for command in (("supernet", "train"), ("subnet", "train"), ("baseline", "train"))],
    ]


@pytest.mark.parametrize("command, option, text", [pytest.param(*case, id=f"{' '.join(case[0])} {case[1]} {case[2]}") for case in _stated_in_help()])
def test_a_default_or_range_an_option_s_help_states_is_the_code_s(command, option, text):
    assert text in _param_help(command, option)


def _listed_choices() -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    """(command, option or argument, the values the code takes) of options typed as text."""
    import typing

    from recnas.baselines import BASELINES
    from recnas.data.schema import SPLITS
    from recnas.embedding.config import SupernetSettings
    from recnas.search.job import PRESETS, JobConfig
    from recnas.search.objective import Objective
    from recnas.space.samplers import STRATEGIES
    from recnas.space.spaces import PRESETS as SPACES
    from recnas.train.config import TrainConfig

    def literal(model, field):
        return typing.get_args(model.model_fields[field].annotation)

    return [
        (("supernet", "train"), "--sampler", STRATEGIES),
        (("supernet", "train"), "--space", tuple(SPACES)),
        (("subnet", "train"), "--space", tuple(SPACES)),
        (("baseline", "train"), "name", tuple(BASELINES)),
        (("evaluate",), "--split", SPLITS),
        (("evaluate",), "--device", literal(TrainConfig, "device")),
        (("search",), "--budget", tuple(PRESETS)),
        (("search",), "--space", tuple(SPACES)),
        (("search",), "--objective", literal(Objective, "kind")),
        (("search",), "--hardware", literal(JobConfig, "hardware")),
        (("search",), "--scoring", literal(JobConfig, "scoring")),
        (("search",), "--executor", literal(JobConfig, "executor")),
        (("embed", "search"), "--sampler", literal(SupernetSettings, "sampler")),
    ]


@pytest.mark.parametrize("command, option, choices", [pytest.param(*case, id=f"{' '.join(case[0])} {case[1]}") for case in _listed_choices()])
def test_an_option_of_named_values_lists_every_value_the_code_takes(command, option, choices):
    """Typed as text (the code checks the value), so --help shows `<str>`: its help lists them."""
    import re

    assert choices and [c for c in choices if not re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", _param_help(command, option))] == []


def _on_a_terminal(argv: list[str], cwd: Path, columns: int = 150) -> str:
    """`recnas ARGV` in a subprocess whose stdout and stderr are a pseudo-terminal: what it drew."""
    import os
    import pty
    import subprocess

    master, slave = pty.openpty()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "recnas", *argv], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    assert proc.wait(timeout=300) == 0, drawn.decode(errors="replace")
    return drawn.decode(errors="replace")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pseudo-terminal")
def test_evaluation_lines_are_not_glued_to_the_progress_bar(tiny_store, tmp_path):
    """On a terminal the trainer's evaluation lines were written past rich's live progress bar,
    behind its last drawing: "train ━━━ 5/10 loss 0.69 ... 0:00:01step 5  epoch ..." on one line,
    a stale bar left above each. They are printed above the bar, each on its own line."""
    import re

    cfg = tmp_path / "c.yaml"
    cfg.write_text("optimizer: adam\nlr: 0.01\nbatch_size: 64\nmax_steps: 10\neval_every: 5\nlog_every: 5\ndevice: cpu\n")
    drawn = _on_a_terminal(["baseline", "train", "lr", "--data", str(tiny_store.dir), "--config", str(cfg), "--out", str(tmp_path / "o")], tmp_path)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    assert "samples/s" in plain, drawn  # the bar was drawn
    shown = [piece.strip() for piece in re.split(r"[\r\n]", plain) if "epoch" in piece and "train_loss" in piece]
    assert len(shown) == 2 and all(piece.startswith("step ") for piece in shown), shown


def test_evaluate_refuses_a_checkpoint_of_nan_weights(tiny_store, tmp_path, monkeypatch, capsys):
    """A model.pt of NaN weights (written by a diverged run before the trainer checked its
    weights) was evaluated as "logloss n/a  auc n/a" with exit 0, and --predictions-out wrote a
    NaN click probability for every row."""
    import torch

    from recnas.train import load_checkpoint, save_checkpoint

    out = tmp_path / "lr"
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", tiny_store.dir, "--config", TINY, "--out", out, "--steps", "2")
    assert code == 0, err
    payload = load_checkpoint(out / "model.pt")
    name = next(k for k, v in payload["model"].items() if v.is_floating_point())
    payload["model"][name] = torch.full_like(payload["model"][name], float("nan"))
    save_checkpoint(out / "model.pt", payload)
    preds, report = tmp_path / "p.npy", tmp_path / "e.json"
    code, stdout, err = run(monkeypatch, capsys, "evaluate", "--ckpt", out / "model.pt", "--data", tiny_store.dir, "--predictions-out", preds, "--json-out", report)
    assert code == 2 and error_line(err) == f"error: {out / 'model.pt'}: the weights hold NaN or inf ({name}): the run that wrote it diverged, and its logits are not numbers; train it again with a lower lr or grad_clip"
    assert "logloss" not in stdout and not preds.exists() and not report.exists()
