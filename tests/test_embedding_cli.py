"""`recnas embed search` end to end on a tiny store, and its user errors."""

import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from recnas.cli import app
from recnas.errors import CheckpointError, ConfigError
from recnas.space import Architecture, BlockSpec
from tests.test_embedding_helpers import make_planted_store

runner = CliRunner()
TINY = {
    "model": {"hidden": [16]},
    "supernet": {"steps": 40, "batch_size": 128},
    "search": {"iterations": 6, "samples_per_iter": 4, "val_rows": 200},
    "retrain": {"epochs": 1, "batch_size": 256, "device": "cpu"},
}


@pytest.fixture
def setup(tmp_path):
    store = make_planted_store(tmp_path / "data", rows=2000, vocab=10)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    return store, cfg, tmp_path


def test_cli_search_end_to_end(setup):
    store, cfg, tmp = setup
    out = tmp / "out"
    args = ["embed", "search", "--data", str(store.dir), "--out", str(out), "--budget-params", "200", "--widths", "2,4,8", "--config", str(cfg), "--seeds", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "embedding tables" in res.output and "stability over 2 seeds" in res.output and "test logloss" in res.output
    report = json.loads((out / "result.json").read_text())
    emb_dims = json.loads((out / "emb_dims.json").read_text())
    assert emb_dims == report["emb_dims"] and len(emb_dims) == 4 and set(emb_dims) <= {2, 4, 8}
    assert report["params"] <= 200 == report["budget_params"]
    assert 0 < report["retrain"]["test"]["logloss"] < 1 and 0 <= report["stability"]["overall_agreement"] <= 1
    assert report["retrain"]["test"] != report["retrain"]["val"] and report["retrain"]["train_seconds"] > 0  # each split scored, and the time recorded
    assert len(report["runs"]) == 2 and (out / "model.pt").is_file()
    assert f"wrote {out / 'result.json'}, {out / 'emb_dims.json'}, {out / 'model.pt'}" in " ".join(res.output.split())  # every file written
    block = BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=16, sparse_dim=16)
    assert Architecture(blocks=(block,), emb_dims=tuple(emb_dims)).emb_dims == tuple(emb_dims)  # plugs into the encoding
    assert runner.invoke(app, [*args[:5], str(tmp / "out2"), *args[6:]]).exit_code == 0
    again = json.loads((tmp / "out2" / "result.json").read_text())
    assert again["emb_dims"] == emb_dims and again["retrain"]["test"] == report["retrain"]["test"]  # deterministic
    before = (out / "result.json").read_bytes()
    res = runner.invoke(app, [*args, "--seeds", "1"])  # into the first run's folder: refused, nothing replaced
    assert isinstance(res.exception, ConfigError) and "--overwrite" in str(res.exception)
    assert (out / "result.json").read_bytes() == before
    (tmp / "partial").mkdir()
    (tmp / "partial" / "model.pt").write_text("keep")  # any file the search would write counts
    res = runner.invoke(app, [*args[:5], str(tmp / "partial"), *args[6:]])
    assert isinstance(res.exception, ConfigError) and "model.pt" in str(res.exception)
    assert (tmp / "partial" / "model.pt").read_text() == "keep"
    res = runner.invoke(app, [*args, "--overwrite", "--no-retrain"])
    assert res.exit_code == 0, res.output
    assert not (out / "model.pt").exists()  # the replaced search's model: its widths may differ from the new emb_dims.json
    assert "model.pt" not in res.output.split("wrote ")[-1]  # and the message names only what was written


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _old_result(out):
    out.mkdir()
    for name in ("result.json", "emb_dims.json", "model.pt"):
        (out / name).write_text(f"old {name}")
    return out


@pytest.mark.parametrize("failure, code", [(RuntimeError("disk full"), 1), (KeyboardInterrupt(), 130)])  # 130: Ctrl-C
def test_failed_search_keeps_the_previous_result_and_leaves_no_staging(setup, monkeypatch, failure, code):
    """The outputs are staged beside --out and swapped in whole: a write that fails (here
    model.pt, after emb_dims.json) leaves the earlier result as it was."""
    import recnas.embedding.pipeline as pipeline

    store, cfg, tmp = setup
    out = _old_result(tmp / "out")
    before = _tree(tmp)

    def broken_save(*args, **kwargs):
        raise failure

    monkeypatch.setattr(pipeline.torch, "save", broken_save)
    args = ["embed", "search", "--data", str(store.dir), "--out", str(out), "--budget-params", "200", "--widths", "2,4,8", "--config", str(cfg), "--overwrite"]
    res = runner.invoke(app, args)
    assert res.exit_code == code, res.output
    assert code == 130 or res.exception is failure
    assert _tree(tmp) == before  # the old result whole, no hidden .out.tmp-* or .out.old-* folder beside it
    monkeypatch.undo()
    res = runner.invoke(app, [*args, "--no-retrain"])  # replaces the whole folder: the old model.pt does not linger
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["emb_dims.json", "result.json"] and [p.name for p in tmp.iterdir() if p.name.startswith(".")] == []
    assert json.loads((out / "emb_dims.json").read_text()) == json.loads((out / "result.json").read_text())["emb_dims"]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_holding_something_else_is_refused_and_kept(setup, overwrite):
    """Replacing --out deletes what it holds: only an earlier search result may be replaced."""
    store, cfg, tmp = setup
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("keep")
    _old_result(tmp / "extra")
    (tmp / "extra" / "plot.png").write_text("keep")
    before = _tree(tmp)
    for out, message in [
        (tmp / "mine", r"holds notes.txt but is not a recnas embed search result \(no result.json\)"),
        (tmp / "extra", r"plot.png is not part of one"),
        (store.dir, r"holds meta.json, test, train, val but is not a recnas embed search result"),  # --out = --data
        (tmp / "cfg.yaml", "exists and is not a directory"),
    ]:
        res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(out), "--budget-params", "200", "--config", str(cfg), *overwrite])
        assert isinstance(res.exception, ConfigError) and "\n" not in str(res.exception), res.output
        assert re.search(message, str(res.exception)), str(res.exception)
        assert _tree(tmp) == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget-params", "79"], "cannot be met"),  # smallest: 4 fields x vocab 10 x width 2 = 80
        (["--budget-mb", "0.00001"], "cannot be met"),
        ([], "exactly one"),
        (["--budget-params", "100", "--budget-mb", "1"], "exactly one"),
        (["--budget-params", "100", "--widths", "2,x"], "--widths"),
        (["--budget-params", "100", "--sampler", "greedy"], "cfg.yaml with --sampler: key 'supernet.sampler'"),  # named no option: "command line: key ..."
    ],
)
def test_cli_bad_inputs_are_clear_config_errors(setup, extra, message):
    store, cfg, tmp = setup
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "o"), "--config", str(cfg), *extra])
    assert isinstance(res.exception, ConfigError), res.output
    assert message in str(res.exception) and "\n" not in str(res.exception)
    assert not (tmp / "o").exists()


def test_cli_bad_config_key(setup, tmp_path):
    store, _, tmp = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {iteratons: 3}\n")
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "o"), "--config", str(bad), "--budget-params", "100"])
    assert isinstance(res.exception, ConfigError) and "search.iteratons" in str(res.exception)


def test_cli_apply_puts_widths_into_an_architecture(tmp_path):
    block = BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=16, sparse_dim=16)
    Architecture(blocks=(block,)).save(tmp_path / "arch.json")
    (tmp_path / "dims.json").write_text("[2, 8, 4]")
    res = runner.invoke(app, ["embed", "apply", "--arch", str(tmp_path / "arch.json"), "--emb-dims", str(tmp_path / "dims.json"), "--out", str(tmp_path / "a2.json")])
    assert res.exit_code == 0, res.output
    assert Architecture.load(tmp_path / "a2.json").emb_dims == (2, 8, 4)
    for bad in ('{"widths": 3}', "[true, 8, 4]"):  # JSON true used to pass as the width 1
        (tmp_path / "dims.json").write_text(bad)
        res = runner.invoke(app, ["embed", "apply", "--arch", str(tmp_path / "arch.json"), "--emb-dims", str(tmp_path / "dims.json"), "--out", str(tmp_path / "a3.json")])
        assert isinstance(res.exception, ConfigError) and "list of positive integers" in str(res.exception)
    (tmp_path / "dims.json").write_text("[2, 8, 4]")
    arch_text = (tmp_path / "arch.json").read_text()
    for out, match in ((tmp_path / "arch.json", "one of the inputs"), (tmp_path / "a2.json", "exists; pass --overwrite")):
        res = runner.invoke(app, ["embed", "apply", "--arch", str(tmp_path / "arch.json"), "--emb-dims", str(tmp_path / "dims.json"), "--out", str(out)])
        assert isinstance(res.exception, ConfigError) and match in str(res.exception)
    assert (tmp_path / "arch.json").read_text() == arch_text
    for flags in ([], ["--overwrite"]):  # a folder: neither "pass --overwrite" nor, with it, a bare "Is a directory"
        res = runner.invoke(app, ["embed", "apply", "--arch", str(tmp_path / "arch.json"), "--emb-dims", str(tmp_path / "dims.json"), "--out", str(tmp_path), *flags])
        assert isinstance(res.exception, ConfigError) and "is a directory; give the path of the architecture file" in str(res.exception)
    res = runner.invoke(app, ["embed", "apply", "--arch", str(tmp_path / "arch.json"), "--emb-dims", str(tmp_path / "dims.json"), "--out", str(tmp_path / "a2.json"), "--overwrite"])
    assert res.exit_code == 0, res.output


def test_cli_apply_overwrite_replaces_only_an_architecture(tmp_path):
    """`--overwrite` replaced whatever file --out named, exit 0: a checkpoint, a config, a
    results table; it now replaces an architecture JSON only."""
    block = BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=16, sparse_dim=16)
    Architecture(blocks=(block,)).save(tmp_path / "arch.json")
    (tmp_path / "dims.json").write_text("[2, 8, 4]")
    args = ["embed", "apply", "--arch", str(tmp_path / "arch.json"), "--emb-dims", str(tmp_path / "dims.json"), "--overwrite", "--out"]
    for name, text in (("model.pt", "not json"), ("config.yaml", "epochs: 3\n"), ("results.json", '{"logloss": 0.4}'), ("dims2.json", "[2, 8, 4]")):
        (tmp_path / name).write_text(text)
        res = runner.invoke(app, [*args, str(tmp_path / name)])
        assert isinstance(res.exception, ConfigError) and "holds no architecture JSON" in str(res.exception), name
        assert (tmp_path / name).read_text() == text
    Architecture(blocks=(block,)).save(tmp_path / "old.json")  # an earlier architecture: replaced, as before
    res = runner.invoke(app, [*args, str(tmp_path / "old.json")])
    assert res.exit_code == 0, res.output
    assert Architecture.load(tmp_path / "old.json").emb_dims == (2, 8, 4)


def test_cli_apply_creates_the_folders_of_out(tmp_path):
    """Like every other output: a missing parent folder was a bare "No such file or directory"."""
    block = BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=16, sparse_dim=16)
    Architecture(blocks=(block,)).save(tmp_path / "arch.json")
    (tmp_path / "dims.json").write_text("[2, 8, 4]")
    args = ["embed", "apply", "--arch", str(tmp_path / "arch.json"), "--emb-dims", str(tmp_path / "dims.json"), "--out"]
    res = runner.invoke(app, [*args, str(tmp_path / "nodir" / "x" / "a.json")])
    assert res.exit_code == 0, res.output
    assert Architecture.load(tmp_path / "nodir" / "x" / "a.json").emb_dims == (2, 8, 4)
    (tmp_path / "afile").write_text("keep")  # a folder that cannot be created: said so, before any reading
    res = runner.invoke(app, [*args, str(tmp_path / "afile" / "a.json")])
    assert isinstance(res.exception, ConfigError) and "afile is not a directory" in str(res.exception)
    assert (tmp_path / "afile").read_text() == "keep"
    store = make_planted_store(tmp_path / "store", rows=200, vocab=5)  # nor inside a data store, as no output is
    res = runner.invoke(app, [*args, str(store.dir / "a.json")])
    assert isinstance(res.exception, ConfigError) and "is inside the recnas store" in str(res.exception)
    assert not (store.dir / "a.json").exists()


def test_cli_out_that_cannot_be_a_folder_is_refused_before_the_search(setup, monkeypatch):
    store, cfg, tmp = setup
    monkeypatch.setattr("recnas.embedding.pipeline.search_one_seed", lambda *a, **k: pytest.fail("searched although --out is unusable"))
    afile = tmp / "afile"
    afile.write_text("keep")
    for out, message in ((afile, "exists and is not a directory"), (afile / "sub", "afile is not a directory")):
        res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(out), "--config", str(cfg), "--budget-params", "200"])
        assert isinstance(res.exception, ConfigError) and message in str(res.exception), res.output
    assert afile.read_text() == "keep"


@pytest.mark.parametrize("widths", ["[]", "[0, 4]", "[-2, 4]"])
def test_cli_config_widths_must_be_positive(setup, tmp_path, widths):
    """--widths was checked but the config's `widths` was not: `[]` was a ValueError traceback
    and `[-2, 4]` a search over a width of -2 that exited 0."""
    store, cfg, tmp = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text() + f"widths: {widths}\n")
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "o"), "--config", str(bad), "--budget-params", "1000"])
    assert isinstance(res.exception, ConfigError) and "widths" in str(res.exception), res.output
    assert not (tmp / "o").exists()


def test_config_widths_are_sorted_like_the_command_line():
    """Repair and refine step to the next index as the next larger width: a config listing
    widths in descending order silently got a worse result than the same --widths."""
    from recnas.embedding.config import EmbedSearchConfig

    assert EmbedSearchConfig.from_dict({"widths": [8, 4, 2, 4]}).widths == (2, 4, 8)


@pytest.mark.parametrize("hidden, message", [("[-1]", "greater than or equal to 1"), ("[16, 0]", "greater than or equal to 1")])
def test_cli_config_hidden_sizes_must_be_positive(setup, tmp_path, hidden, message):
    """model.hidden [-1] was a torch traceback; [0] trained a model with a zero-wide layer
    (AUC 0.5) and exited 0."""
    store, cfg, tmp = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("hidden:\n  - 16", f"hidden: {hidden}"))
    assert f"hidden: {hidden}" in bad.read_text()
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "o"), "--config", str(bad), "--budget-params", "1000"])
    assert isinstance(res.exception, ConfigError) and "model.hidden" in str(res.exception) and message in str(res.exception), res.output
    assert not (tmp / "o").exists()


def test_cli_search_on_a_store_without_categorical_fields(tmp_path):
    """A store of dense features only (a csv spec without `categorical:`) has no widths to
    search: one DataError before anything runs, not a torch.cat traceback."""
    from recnas.errors import DataError

    store = make_planted_store(tmp_path / "data", rows=400, n_signal=0, n_noise=0)
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp_path / "o"), "--budget-params", "100"])
    assert isinstance(res.exception, DataError) and "no categorical fields" in str(res.exception), res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("sub", ["", "sub"])
def test_training_run_out_at_or_in_a_search_result_is_refused(setup, tmp_path, monkeypatch, capsys, sub):
    """`recnas baseline train --out RESULT --overwrite` took the result's model.pt for a
    training run and replaced it, leaving result.json beside another model; inside one it
    made the result unreplaceable. Both are refused before training, the result kept."""
    from recnas.train import Trainer
    from tests.test_cli_models import TINY as TRAIN_CFG, error_line, run

    store, _, tmp = setup
    out = _old_result(tmp / "out")
    before = _tree(tmp)
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained into a search result"))
    code, _, err = run(monkeypatch, capsys, "baseline", "train", "lr", "--data", store.dir, "--config", TRAIN_CFG, "--out", out / sub, "--overwrite")
    assert code == 2 and "recnas embed search result" in error_line(err)
    assert _tree(tmp) == before


@pytest.mark.parametrize("retrain, message", [({"device": "cuda"}, "device: 'cuda'"), ({"amp": "fp16"}, "amp: 'fp16'")])
def test_retrain_settings_this_machine_lacks_are_refused_before_the_search(setup, monkeypatch, retrain, message):
    """A retrain device (or fp16 amp) without CUDA failed only after supernet training and the
    search, all of their work lost; it is refused first, naming the retrain section."""
    import recnas.embedding.pipeline as pipeline

    store, _, tmp = setup
    cfg = tmp / "cuda.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "retrain": {**TINY["retrain"], **retrain}}))
    monkeypatch.setattr(pipeline.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(pipeline, "train_supernet", lambda *a, **k: pytest.fail("searched before refusing the retrain settings"))
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "out"), "--budget-params", "200", "--config", str(cfg)])
    assert isinstance(res.exception, ConfigError) and "retrain" in str(res.exception) and message in str(res.exception), res.output
    assert not (tmp / "out").exists()


def test_retrain_inplace_distill_is_refused_before_the_search(setup, monkeypatch):
    """`retrain: {inplace_distill: 0.5}` (a TrainConfig key, so accepted by the config) was
    refused by the Trainer only when the retraining started: after supernet training and the
    search, whose results were then lost. The retrained model is no supernet: refused first."""
    import recnas.embedding.pipeline as pipeline

    store, _, tmp = setup
    cfg = tmp / "distill.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "retrain": {**TINY["retrain"], "inplace_distill": 0.5}}))
    monkeypatch.setattr(pipeline, "train_supernet", lambda *a, **k: pytest.fail("searched before refusing the retrain settings"))
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "out"), "--budget-params", "200", "--config", str(cfg)])
    assert isinstance(res.exception, ConfigError) and "retrain: inplace_distill" in str(res.exception), res.output
    assert not (tmp / "out").exists()


@pytest.mark.parametrize("retrain", [{"tensorboard": True}, {"checkpoint_every": 5}])
def test_retrain_settings_without_a_run_folder_are_refused(setup, retrain):
    """The retraining has no run folder (it writes OUT/model.pt only): `tensorboard: true` and
    `checkpoint_every` were accepted and silently wrote nothing."""
    store, _, tmp = setup
    cfg = tmp / "tb.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "retrain": {**TINY["retrain"], **retrain}}))
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "out"), "--budget-params", "200", "--config", str(cfg)])
    assert isinstance(res.exception, ConfigError) and "key 'retrain'" in str(res.exception) and f"{next(iter(retrain))} would write into a training run folder" in str(res.exception), res.output
    assert not (tmp / "out").exists()


def test_apply_and_evaluate_outputs_in_a_search_result_are_refused(setup, tmp_path, monkeypatch, capsys):
    """`embed apply --out RESULT/arch.json` (beside its emb_dims.json, the natural place) and
    evaluate's --json-out / --predictions-out there were written, after which the result's
    --overwrite was refused ("arch.json is not part of one"), as for any output inside it."""
    from tests.test_cli_models import error_line, run

    store, _, tmp = setup
    out = _old_result(tmp / "out")
    block = BlockSpec(dense_ops=("fc",), sparse_ops=("dot",), dense_inputs=(0,), sparse_inputs=(0,), dense_dim=16, sparse_dim=16)
    Architecture(blocks=(block,)).save(tmp_path / "arch.json")
    (out / "emb_dims.json").write_text("[2, 8, 4]")
    before = _tree(out)
    for args in (
        ["embed", "apply", "--arch", tmp_path / "arch.json", "--emb-dims", out / "emb_dims.json", "--out", out / "arch.json"],
        ["evaluate", "--ckpt", tmp_path / "model.pt", "--data", store.dir, "--json-out", out / "eval.json"],
        ["evaluate", "--ckpt", tmp_path / "model.pt", "--data", store.dir, "--predictions-out", out / "p.npy"],
    ):
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and f"is inside the recnas embed search result {out}" in error_line(err), err
    assert _tree(out) == before


def test_cli_device_overrides_the_device_of_the_search_and_the_retraining(setup, monkeypatch):
    """`embed search` trains where its config's `device` and `retrain.device` say: one of
    `cuda` ran only where CUDA was. `--device cpu` overrides both, and result.json records it."""
    import recnas.embedding.pipeline as pipeline

    store, _, tmp = setup
    cfg = tmp / "cuda.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "device": "cuda", "retrain": {**TINY["retrain"], "device": "cuda"}}))
    monkeypatch.setattr(pipeline.torch.cuda, "is_available", lambda: False)
    args = ["embed", "search", "--data", str(store.dir), "--budget-params", "200", "--widths", "2,4", "--config", str(cfg), "--no-progress"]
    res = runner.invoke(app, [*args, "--out", str(tmp / "cuda")])
    assert isinstance(res.exception, ConfigError) and "device: 'cuda' requested but no CUDA device" in str(res.exception), res.output
    res = runner.invoke(app, [*args, "--out", str(tmp / "cpu"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp / "cpu" / "result.json").read_text())
    assert (report["config"]["device"], report["config"]["retrain"]["device"], report["environment"]["device"]) == ("cpu", "cpu", "cpu")


def test_cli_search_threads_pins_and_records_the_thread_count(setup):
    """The thread count changes CPU rounding, and so the searched widths: `--threads` pins it
    (the training commands and `recnas search` had it, this command did not) and result.json
    records it, then the caller's count is restored."""
    import torch

    store, cfg, tmp = setup
    before = torch.get_num_threads()
    args = ["embed", "search", "--data", str(store.dir), "--budget-params", "200", "--widths", "2,4", "--config", str(cfg), "--no-retrain"]
    res = runner.invoke(app, [*args, "--out", str(tmp / "one"), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp / "one" / "result.json").read_text())["environment"]["cpu_threads"] == 1
    assert torch.get_num_threads() == before
    res = runner.invoke(app, [*args, "--out", str(tmp / "default")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp / "default" / "result.json").read_text())["environment"]["cpu_threads"] == before


@pytest.mark.parametrize("flag, drawn", [([], True), (["--no-progress"], False)])
def test_cli_search_no_progress_draws_no_bars(setup, monkeypatch, capsys, flag, drawn):
    """`--no-progress`, as every other command that trains takes it, was "No such option"."""
    import sys

    import recnas.embedding.pipeline as pipeline
    from tests.test_cli_models import error_line, run

    store, cfg, tmp = setup
    asked = []

    def search(*args, progress, **kwargs):
        asked.append(progress)
        raise ConfigError("stopped here")

    monkeypatch.setattr(pipeline, "run_search", search)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars are drawn on a terminal only
    monkeypatch.setenv("NO_COLOR", "1")  # and the error line, on a terminal, is red
    code, _, err = run(monkeypatch, capsys, "embed", "search", "--data", store.dir, "--out", tmp / "out", "--budget-params", "200", "--config", cfg, *flag)
    assert code == 2 and error_line(err) == "error: stopped here" and asked == [drawn]


def test_evaluate_on_an_embedding_search_model_says_what_it_is(setup):
    """`recnas evaluate --ckpt RESULT/model.pt` said only "not a recnas checkpoint"."""
    store, cfg, tmp = setup
    out = tmp / "out"
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(out), "--budget-params", "200", "--widths", "2,4", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--ckpt", str(out / "model.pt"), "--data", str(store.dir)])
    assert isinstance(res.exception, CheckpointError)
    assert "the model of an embedding size search (`recnas embed search`)" in str(res.exception) and "result.json" in str(res.exception)


def test_report_prints_an_undefined_auc_as_n_a():
    """A validation or test split of one class (all labels 0, or 1 click in 2,000 rows) has no
    AUC: the report printed `auc nan` where every training command prints `auc n/a`."""
    import io

    from rich.console import Console

    from recnas.embedding.report import print_report

    report = {
        "fields": ["a"], "vocab_sizes": [5], "emb_dims": [2], "stability": {"seeds": 1, "per_field": [{"agreement": 1.0}]},
        "params": 10, "mib": 0.0, "budget_params": 20, "budget_mib": 0.0, "budget_used": 0.5,
        "retrain": {"steps": 3, "val": {"logloss": 0.1, "auc": float("nan")}, "test": {"logloss": 0.2, "auc": None}},
    }
    buf = io.StringIO()
    print_report(report, Console(file=buf, width=200))
    out = buf.getvalue()
    assert "val logloss 0.10000 auc n/a | test logloss 0.20000 auc n/a" in out and "nan" not in out


def test_a_sampler_floor_of_zero_is_refused(setup, tmp_path):
    """`floor` keeps every width trained (docs/embedding.md); at 0 a width whose loss stopped
    improving was never drawn again, without a word."""
    store, _, tmp = setup
    bad = tmp_path / "floor.yaml"
    bad.write_text("supernet: {floor: 0}\n")
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "o"), "--config", str(bad), "--budget-params", "100"])
    assert isinstance(res.exception, ConfigError) and "supernet.floor" in str(res.exception) and "greater than 0" in str(res.exception)
    assert not (tmp / "o").exists()


def test_a_retrain_warmup_longer_than_the_retraining_is_refused_before_the_search(setup, monkeypatch):
    """`retrain: {warmup_steps: 1000}` over a few steps trained at a fraction of its lr: the
    trainer warned only when the retraining started, after the supernet and the search. It is
    refused first, as the training commands refuse it."""
    import recnas.embedding.pipeline as pipeline

    store, _, tmp = setup
    cfg = tmp / "warmup.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "retrain": {**TINY["retrain"], "warmup_steps": 1000}}))
    monkeypatch.setattr(pipeline, "train_supernet", lambda *a, **k: pytest.fail("searched before refusing the retrain settings"))
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "out"), "--budget-params", "200", "--config", str(cfg)])
    assert isinstance(res.exception, ConfigError), res.output
    assert re.search(r"retrain: the 1000 warmup_steps would outlast the \d+ steps of the retraining \(1 epochs of .*\): the lr would never reach its value", str(res.exception))
    assert not (tmp / "out").exists()


def test_the_retrained_model_is_reported_on_the_whole_splits_whatever_max_eval_rows(setup):
    """`retrain: {max_eval_rows: N}` caps the retraining's validation passes; it also capped the
    reported test split, so `max_eval_rows: 1` reported a test log loss of one row, while
    docs/embedding.md says the retrained model's numbers are of the whole splits."""
    store, _, tmp = setup
    cfg = tmp / "cap.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "retrain": {**TINY["retrain"], "max_eval_rows": 1}}))
    res = runner.invoke(app, ["embed", "search", "--data", str(store.dir), "--out", str(tmp / "out"), "--budget-params", "200", "--widths", "2,4,8", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp / "out" / "result.json").read_text())["retrain"]
    assert report["val"]["rows"] == len(store.split("val")) and report["test"]["rows"] == len(store.split("test"))


def test_cli_apply_checks_the_widths_against_the_space_beside_the_arch_or_given(tmp_path):
    """A width past the space's emb_dim was written (exit 0) and refused only by `subnet train`
    later; with a search run's space.yaml beside --arch, or a --space, apply refuses it."""
    import numpy as np

    from recnas.space import get_space
    from recnas.space.samplers import random_architecture

    sp = get_space("small-tiny")  # emb_dim 8
    run = tmp_path / "run"
    run.mkdir()
    random_architecture(np.random.default_rng(0), sp).save(run / "best_arch.json")
    (run / "space.yaml").write_text(yaml.safe_dump(sp.model_dump(mode="json"), sort_keys=False))
    (tmp_path / "dims.json").write_text(f"[2, {sp.emb_dim * 2}, 4]")
    args = ["embed", "apply", "--arch", str(run / "best_arch.json"), "--emb-dims", str(tmp_path / "dims.json"), "--out", str(tmp_path / "a.json")]
    res = runner.invoke(app, args)
    assert isinstance(res.exception, ConfigError) and f"emb_dims must lie in 1..{sp.emb_dim}" in str(res.exception) and "space.yaml" in str(res.exception)
    assert not (tmp_path / "a.json").exists()
    (run / "space.yaml").unlink()  # no space known: written, as before, with the reminder
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "--space checks them" in res.output
    res = runner.invoke(app, [*args, "--overwrite", "--space", "small-tiny"])  # a preset named
    assert isinstance(res.exception, ConfigError) and f"1..{sp.emb_dim}" in str(res.exception)
    (tmp_path / "dims.json").write_text("[2, 8, 4]")
    res = runner.invoke(app, [*args, "--overwrite", "--space", "small-tiny"])
    assert res.exit_code == 0 and "within the emb_dim of small-tiny" in res.output
    assert Architecture.load(tmp_path / "a.json").emb_dims == (2, 8, 4)
