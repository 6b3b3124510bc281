"""Files of a run folder: written atomically, and damaged ones refused in one line or recomputed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from recnas.search.job import dump_config, load_job_config
from recnas.search.objective import Objective
from recnas.search.report import write_report
from recnas.search.results import ResultsStore
from recnas.space import get_space
from recnas.space.samplers import random_architecture
from recnas.train import TrainConfig, Trainer
from tests.test_trainer import make_model, tiny_cfg


def _write_report(d: Path) -> None:
    write_report(d, {"dataset": "tiny", "models": [], "search": {"candidates_in_store": 0}}, ResultsStore(d / "s.sqlite"), "search", Objective())


def _write_metrics(d: Path, store) -> None:
    t = Trainer(make_model(store.meta), tiny_cfg(epochs=1), store, out_dir=d, progress=False, model_spec={"kind": "toy"})
    t._write_outputs(t._result())


WRITERS = {
    "config.yaml": lambda d, store: dump_config(load_job_config("smoke"), d / "config.yaml"),
    "results.json": lambda d, store: _write_report(d),
    "metrics.json": _write_metrics,
    "best_arch.json": lambda d, store: random_architecture(np.random.default_rng(0), get_space("full-tiny")).save(d / "best_arch.json"),
    "train.yaml": lambda d, store: TrainConfig().to_yaml(d / "train.yaml"),
}


@pytest.mark.parametrize("name", WRITERS)
def test_write_killed_before_it_completes_keeps_the_previous_file(tiny_store, tmp_path, monkeypatch, name):
    """Each writer goes through a temp file renamed over the target: stopped just before the
    rename (as by a kill or Ctrl-C), the previous file is whole and no temp file is left."""
    target = tmp_path / name
    target.write_text("previous good copy")
    real_replace = os.replace

    def stopped(src, dst):
        if Path(dst).name == name:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", stopped)
    with pytest.raises(KeyboardInterrupt):
        WRITERS[name](tmp_path, tiny_store)
    assert target.read_text() == "previous good copy"
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_damaged_results_database_is_one_line_error(tmp_path, monkeypatch, capsys):
    """Bad pages past the header: refused on opening (search and `search show`), not a
    sqlite traceback from the first query that reads them."""
    from recnas.errors import DataError
    from tests.test_cli_models import error_line, run

    path = tmp_path / "run" / "search.sqlite"
    store = ResultsStore(path)
    for i in range(100):
        store.put(f"k{i}", "x" * 500, {"logloss": 0.5})
    store.close()
    with open(path, "r+b") as fh:  # page 2 of 4096 bytes: one of the candidates table's pages
        fh.seek(4096)
        fh.write(b"\xff" * 4096)
    for read_only in (False, True):
        with pytest.raises(DataError, match="damaged results database"):
            ResultsStore(path, read_only=read_only)
    code, _, err = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    assert code == 2 and "damaged results database" in error_line(err)


def test_show_reads_a_database_a_search_was_killed_writing(tmp_path, monkeypatch, capsys):
    """SIGKILL mid-transaction leaves a hot journal, which a read-only connection cannot roll
    back: `search show` called the sound file "not a readable recnas results database (attempt
    to write a readonly database)" until the search ran again."""
    import subprocess
    import sys

    from tests.test_cli_models import run

    path = tmp_path / "run" / "search.sqlite"
    store = ResultsStore(path)
    for i in range(3):
        store.put(f"k{i}", "{}", {"logloss": 0.5 - i / 100})
    store.close()
    killed = (  # a transaction big enough to spill into the file, cut short as SIGKILL would
        "import os, sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute('PRAGMA cache_size=1'); db.execute('BEGIN')\n"
        "for i in range(300): db.execute('INSERT INTO candidates VALUES (?, ?, NULL, ?, 0)', (f'z{i}', 'x' * 3000, '{}'))\n"
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", killed, str(path)], check=True)
    assert path.with_name("search.sqlite-journal").exists()
    code, out, err = run(monkeypatch, capsys, "search", "show", tmp_path / "run", "--top", "2")
    assert code == 0 and "3 candidates evaluated" in out and "k2" in out, err
    assert not path.with_name("search.sqlite-journal").exists()  # rolled back, as the search would


def test_database_of_another_schema_is_one_line_error(tmp_path, monkeypatch, capsys):
    """A search.sqlite whose candidates table is another application's (same name, other
    columns): refused on opening, by `search show` and the job alike, not an sqlite
    OperationalError traceback from the first query (or the first result written)."""
    import sqlite3

    from recnas.errors import DataError
    from tests.test_cli_models import error_line, run

    path = tmp_path / "run" / "search.sqlite"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE candidates (key TEXT, metrics TEXT)")
    db.execute("""INSERT INTO candidates VALUES ('a', '{"logloss": 0.5, "auc": 0.6}')""")
    db.commit()
    db.close()
    for read_only in (False, True):
        with pytest.raises(DataError, match="candidates table has no column arch"):
            ResultsStore(path, read_only=read_only)
    code, _, err = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    assert code == 2 and "not a recnas results database" in error_line(err)


def test_a_database_holding_a_trigger_or_view_is_refused_before_it_runs(tmp_path, monkeypatch, capsys):
    """A search.sqlite holding a trigger (a hostile file's, or another application's) ran its own
    SQL at every candidate a resumed search stored: here a recursive query of a billion rows that
    hung the search. recnas writes no triggers or views: such a file is refused on opening, by the
    job and `search show` alike, with nothing run and the file left as it was."""
    import sqlite3

    from recnas.errors import DataError
    from tests.test_cli_models import error_line, run

    path = tmp_path / "run" / "search.sqlite"
    ResultsStore(path).close()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sink (n INTEGER)")
    db.execute("CREATE TRIGGER hang AFTER INSERT ON candidates BEGIN "
               "INSERT INTO sink WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT count(*) FROM c; END")
    db.commit()
    db.close()
    before = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(DataError, match="not a recnas results database \\(it holds trigger 'hang', which recnas never writes\\)"):
            ResultsStore(path, read_only=read_only)
    assert path.read_bytes() == before
    code, _, err = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    assert code == 2 and "trigger 'hang'" in error_line(err)
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER hang")
    db.execute("CREATE VIEW best AS SELECT key FROM candidates")
    db.commit()
    db.close()
    with pytest.raises(DataError, match="it holds view 'best'"):
        ResultsStore(path)


def test_show_on_a_search_before_its_first_candidate(tmp_path, monkeypatch, capsys):
    """`search show` on a running job whose supernet still trains (no search.sqlite yet, or the
    empty file of the moment it is created) asked "is this a recnas search run folder?"."""
    from tests.test_cli_models import error_line, run

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    for made in (False, True):
        if made:
            (tmp_path / "run" / "search.sqlite").write_bytes(b"")
        code, _, err = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
        assert code == 2 and "no candidate scored yet" in error_line(err), err
    assert (tmp_path / "run" / "search.sqlite").read_bytes() == b""  # nothing added to the job's file


def test_show_on_a_training_run_says_so(tmp_path, monkeypatch, capsys):
    """`search show` on a training command's folder (its config.yaml, no search.sqlite) said
    "no candidate scored yet; the search there has not reached its evolution (run `search show`
    again later)": a wait for a search that does not exist."""
    from tests.test_cli_models import error_line, run

    (tmp_path / "run").mkdir()
    dump_config(TrainConfig(lr=0.001), tmp_path / "run" / "config.yaml")
    code, _, err = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    line = error_line(err)
    assert code == 2 and "holds a training run" in line and "not a search" in line and "not reached its evolution" not in line, err


def test_show_lists_rows_without_auc_or_costs(tmp_path, monkeypatch, capsys):
    """Rows whose AUC or costs are missing or not numbers (written by another tool, or edited)
    are listed with "-" there, not a KeyError / format traceback."""
    from tests.test_cli_models import run

    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    store.put("only-logloss", "{}", {"logloss": 0.5})
    store.put("nulls", "{}", {"logloss": 0.4, "auc": None, "flops": None, "params": "many"})
    store.close()
    code, out, err = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    assert code == 0 and "Traceback" not in err, err
    assert "only-logloss" in out and "nulls" in out and "0.4000" in out


def test_show_prints_an_undefined_auc_as_a_gap(tmp_path, monkeypatch, capsys):
    """An AUC of NaN (a validation sample of one class) printed as "nan" in `show`, where every
    other table prints an undefined metric as a gap."""
    from tests.test_cli_models import run

    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    store.put("one-class", "{}", {"logloss": 0.4, "auc": float("nan"), "flops": "many", "params": 12})
    store.close()
    code, out, _ = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    row = next(line for line in out.splitlines() if "one-class" in line)
    assert code == 0 and "nan" not in row.lower().replace("one-class", "") and row.count("-") >= 2 + 1, row  # auc and flops, plus the key's


def test_show_ranks_a_nan_score_last(tmp_path, monkeypatch, capsys):
    """A NaN log loss (NaN logits under inherited weights) compared as a score left the sort
    unordered: the "best" listed were 0.5 and nan while 0.3 was stored."""
    from tests.test_cli_models import run

    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    for key, loss in [("a", 0.5), ("b", float("nan")), ("c", 0.3), ("d", 0.4), ("e", 0.45)]:
        store.put(key, "{}", {"logloss": loss, "auc": 0.6})
    store.close()
    code, out, _ = run(monkeypatch, capsys, "search", "show", tmp_path / "run", "--top", "3")
    listed = [line.split()[1] for line in out.splitlines() if line.startswith("│")]
    assert code == 0 and listed == ["c", "d", "e"], out


def test_show_with_binary_results_md_is_one_line_error(tmp_path, monkeypatch, capsys):
    """A results.md that is not UTF-8 text (damaged, or another file under that name) is one
    error naming it, not a UnicodeDecodeError traceback."""
    from tests.test_cli_models import error_line, run

    ResultsStore(tmp_path / "run" / "search.sqlite").close()
    (tmp_path / "run" / "results.md").write_bytes(b"\xff\xfe\x00 not text")
    code, _, err = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    assert code == 2 and "results.md" in error_line(err) and "UTF-8" in error_line(err)


def test_show_prints_keys_and_results_md_of_a_foreign_run_as_text(tmp_path, monkeypatch, capsys):
    """A downloaded run folder is shown as written, never acted on: a candidate key was rich
    markup (`[/]` a MarkupError traceback, `[link=...]` a hidden link), and the control
    characters of a key or results.md went to the terminal (clear the screen, set the title)."""
    from tests.test_cli_models import run

    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    store.put("[/]", "{}", {"logloss": 0.5})
    store.put("[bold]k\x1b[2J", "{}", {"logloss": 0.6})
    store.close()
    (tmp_path / "run" / "results.md").write_text("| model |\n|---|\n| a\x1b]0;title\x07b |\n")
    code, out, err = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    assert code == 0 and "Traceback" not in err, err
    assert "\x1b" not in out and "\x07" not in out
    assert "│ [/] " in out and "│ [bold]k\\x1b[2J" in out and "| a\\x1b]0;title\\x07b |" in out, out


def test_finished_model_with_damaged_metrics_json_is_reused(tiny_store, tmp_path):
    """A job re-run over a finished stage takes its metrics from model.pt, so a cut-short
    metrics.json (the copy for people) is no JSONDecodeError traceback."""

    from recnas.search.fitting import baseline_builder, fit_or_load

    build = baseline_builder("lr", tiny_store.meta, {})
    out = tmp_path / "baselines" / "lr"
    _, first = fit_or_load(build, tiny_cfg(epochs=1), tiny_store, out, progress=False)
    metrics = out / "metrics.json"
    metrics.write_text(metrics.read_text()[:20])
    _, again = fit_or_load(build, tiny_cfg(epochs=1), tiny_store, out, progress=False)
    assert again == first and again["steps"] > 0


def test_finished_model_killed_before_its_config_yaml_gets_it_when_the_job_goes_on(tiny_store, tmp_path, monkeypatch):
    """A trainer writes model.pt, metrics.json, then config.yaml. A job killed between the last
    two (found by killing `recnas search` at random moments) left a model folder the re-run
    reuses as finished, and config.yaml never came: supernet/, finalists/<key>/ and baselines/<name>/
    (and best/, copied from the winner) went on without the config that trained them. The re-run
    writes it, as the uninterrupted run did, and trains nothing."""
    from recnas.search.fitting import baseline_builder, fit_or_load
    from recnas.train.config import TrainConfig

    build = baseline_builder("lr", tiny_store.meta, {})
    ref, out = tmp_path / "ref", tmp_path / "baselines" / "lr"
    fit_or_load(build, tiny_cfg(epochs=1), tiny_store, ref, progress=False)
    real_to_yaml = TrainConfig.to_yaml

    def killed(self, path):
        raise KeyboardInterrupt  # as a kill there leaves it: model.pt and metrics.json written, no config.yaml

    monkeypatch.setattr(TrainConfig, "to_yaml", killed)
    with pytest.raises(KeyboardInterrupt):
        fit_or_load(build, tiny_cfg(epochs=1), tiny_store, out, progress=False)
    assert (out / "model.pt").is_file() and (out / "metrics.json").is_file() and not (out / "config.yaml").exists()
    monkeypatch.setattr(TrainConfig, "to_yaml", real_to_yaml)
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("a finished model was trained again"))
    fit_or_load(build, tiny_cfg(epochs=1), tiny_store, out, progress=False)
    assert (out / "config.yaml").read_text() == (ref / "config.yaml").read_text()


def test_ctrl_c_is_one_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C during a job: exit 130 with one line saying so, not a silent exit (or a traceback)."""
    from tests.test_cli_models import run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("recnas.search.pipeline.run_job", interrupted)
    code, _, err = run(monkeypatch, capsys, "search", "--budget", "smoke", "--out", tmp_path / "run", "--no-progress")
    assert code == 130 and err.strip() == "interrupted"


@pytest.mark.parametrize("module, argv", [
    ("recnas.cli.models", ["data", "synth", "--help"]),  # the command modules, loaded at every start
    ("torch", ["evaluate", "--ckpt", "m.pt", "--data", "d"]),  # a command's own imports (--help loads no torch)
])
def test_ctrl_c_while_the_command_starts_is_one_line(module, argv):
    """Ctrl-C in the seconds the command spends importing torch and the rest, before its
    error handling runs, ended every command in a traceback of the import. Interrupted here where
    `module` is imported (no timing): exit 130 and one line, as later on."""
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, *args):\n"
        f"        if name == {module!r}:\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        f"sys.argv = ['recnas', *{argv!r}]\n"
        "runpy.run_module('recnas', run_name='__main__')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert r.returncode == 130 and r.stderr.strip() == "interrupted", r.stderr


def test_finished_model_is_not_reused_on_a_store_made_again_with_other_rows(tmp_path):
    """A store made again in place (another split --seed: same path, shape and vocabulary) let a
    re-run job report its finished models, trained on the old rows, beside ones trained on the
    new. Refused, naming the checkpoint; a copy of the same store still reuses the model."""
    import shutil

    from recnas.data.store import CTRStore
    from recnas.errors import CheckpointError
    from recnas.search.fitting import baseline_builder, fit_or_load
    from recnas.train.checkpoint import load_checkpoint, save_checkpoint
    from tests.conftest import make_tiny_store

    first = make_tiny_store(tmp_path / "a", seed=0)
    other = make_tiny_store(tmp_path / "b", seed=1)  # same shape and sizes, other rows
    out = tmp_path / "baselines" / "dlrm"
    _, trained = fit_or_load(baseline_builder("dlrm", first.meta, {}), tiny_cfg(epochs=1), first, out, progress=False)
    with pytest.raises(CheckpointError, match=r"model.pt: the run was trained on another dataset than .*b .*give the job another --out"):
        fit_or_load(baseline_builder("dlrm", other.meta, {}), tiny_cfg(epochs=1), other, out, progress=False)
    # a model.pt written before it recorded its data: checked against the checkpoint's record
    payload = load_checkpoint(out / "model.pt")
    del payload["data"]
    save_checkpoint(out / "model.pt", payload)
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: the run was trained on another dataset than .*b .*give the job another --out"):
        fit_or_load(baseline_builder("dlrm", other.meta, {}), tiny_cfg(epochs=1), other, out, progress=False)
    shutil.copytree(first.dir, tmp_path / "moved")
    moved = CTRStore(tmp_path / "moved")
    assert fit_or_load(baseline_builder("dlrm", moved.meta, {}), tiny_cfg(epochs=1), moved, out, progress=False)[1] == trained


def test_a_finished_models_data_is_checked_without_reading_its_checkpoint(tiny_store, tmp_path, monkeypatch):
    """A re-run reusing a finished model read its whole checkpoint.pt (weights and optimizer
    state, hundreds of MB for large tables) only for the record of its data, once per model;
    model.pt, loaded anyway, now holds that record."""
    import recnas.search.fitting as fitting

    out = tmp_path / "baselines" / "dlrm"
    build = fitting.baseline_builder("dlrm", tiny_store.meta, {})
    _, trained = fitting.fit_or_load(build, tiny_cfg(epochs=1), tiny_store, out, progress=False)
    assert (out / "checkpoint.pt").is_file()

    def no_checkpoint(path, *args, **kwargs):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(fitting, "load_checkpoint", no_checkpoint)
    assert fitting.fit_or_load(build, tiny_cfg(epochs=1), tiny_store, out, progress=False)[1] == trained


def test_finished_model_of_another_recipe_is_not_reported_as_the_new_one(tiny_store, tmp_path):
    """A re-run job with other baseline hyper-parameters or `final` settings must not report the
    old model under the new config: another model is refused, a longer recipe trains on."""

    from recnas.errors import ConfigError
    from recnas.search.fitting import baseline_builder, fit_or_load

    out = tmp_path / "baselines" / "dlrm"
    build = baseline_builder("dlrm", tiny_store.meta, {})
    _, first = fit_or_load(build, tiny_cfg(epochs=1), tiny_store, out, progress=False)
    _, same = fit_or_load(build, tiny_cfg(epochs=1, log_every=7), tiny_store, out, progress=False)  # how it runs: not the recipe
    assert same == first
    other = baseline_builder("dlrm", tiny_store.meta, {"top_mlp": [4]})
    with pytest.raises(ConfigError, match="different model.*another --out"):
        fit_or_load(other, tiny_cfg(epochs=1), tiny_store, out, progress=False)
    _, longer = fit_or_load(build, tiny_cfg(epochs=2), tiny_store, out, progress=False)
    assert longer["steps"] == 2 * first["steps"]


def test_a_shorter_recipe_over_a_trained_model_names_what_a_search_can_do(tiny_store, tmp_path):
    """The refusal used to say "--overwrite to start afresh", an option `recnas search` lacks."""

    from recnas.errors import ConfigError
    from recnas.search.fitting import baseline_builder, fit_or_load

    out = tmp_path / "baselines" / "lr"
    build = baseline_builder("lr", tiny_store.meta, {})
    _, first = fit_or_load(build, tiny_cfg(epochs=2), tiny_store, out, progress=False)
    before = (out / "model.pt").read_bytes()
    with pytest.raises(ConfigError, match=rf"trained to step {first['steps']}, past the 2 steps .*use another --out") as err:
        fit_or_load(build, tiny_cfg(max_steps=2), tiny_store, out, progress=False)
    assert "--overwrite" not in str(err.value) and (out / "model.pt").read_bytes() == before


def test_unreadable_architecture_in_a_results_row_is_one_line_error(tmp_path):
    """Damage inside a row passes `quick_check`; the re-run reading that candidate's
    architecture says which database and candidate, instead of a pydantic traceback."""
    import sqlite3

    from recnas.errors import DataError
    from recnas.search.pipeline import run_job

    cfg = load_job_config("smoke", baselines=["lr"])
    out = tmp_path / "run"
    report = run_job(cfg, out, progress=False)
    key = report["finalists"][0]["key"]
    with sqlite3.connect(out / "search.sqlite") as db:
        db.execute("UPDATE candidates SET arch = ? WHERE key = ?", ('{"blocks": [{"dense_o', key))
    (out / "best_arch.json").unlink()
    with pytest.raises(DataError, match=rf"search.sqlite: candidate '{key}' has no readable architecture"):
        run_job(cfg, out, progress=False)


def test_a_model_that_diverges_in_a_job_is_named(tiny_store, tmp_path, monkeypatch):
    """A job trains many models (finalists, each `final_grid` point, baselines): a diverged one
    used to end it with only "training diverged: loss nan at step 9", saying not which."""
    import re

    from recnas.errors import TrainingDiverged
    from recnas.search.fitting import baseline_builder, fit_or_load

    from recnas.train import trainer

    def diverge(self, *args, **kwargs):
        raise TrainingDiverged("training diverged: loss nan at step 9; lower lr or set grad_clip")

    monkeypatch.setattr(trainer.Trainer, "fit", diverge)
    out = tmp_path / "baselines" / "lr" / "lr=10"
    build = baseline_builder("lr", tiny_store.meta, {})
    with pytest.raises(TrainingDiverged, match=re.escape(f"{out}: training diverged: loss nan at step 9")):
        fit_or_load(build, tiny_cfg(epochs=1), tiny_store, out, progress=False)


def test_a_final_grid_point_that_diverges_is_left_out_of_the_selection(tiny_store, tmp_path, monkeypatch):
    """A grid tries settings of which some may not suit every model (an lr too high for one): a
    point that diverged ended the whole job after its search, and the job continued diverged
    again. It is now left out of the selection (a warning names it); every point diverging ends it."""
    import math

    from recnas.errors import TrainingDiverged
    from recnas.search.fitting import baseline_builder, fit_selected
    from recnas.train import trainer

    fit = trainer.Trainer.fit

    def diverge_from_lr_10(self, *args, **kwargs):
        if self.cfg.lr >= 10:
            raise TrainingDiverged("training diverged: loss nan at step 9; lower lr or set grad_clip")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "fit", diverge_from_lr_10)
    build = baseline_builder("lr", tiny_store.meta, {})
    got = fit_selected(build, load_job_config("smoke", final_grid={"lr": [10.0, 0.003]}), tiny_store, tmp_path / "a", False, "cpu", validate=False)
    assert got["point"] == {"lr": 0.003} and math.isfinite(got["val_logloss"])
    point = got["grid"][0]
    assert point["point"] == "lr=10" and point["val_logloss"] == math.inf
    assert point["diverged"] == f"{tmp_path / 'a' / 'lr=10'}: training diverged: loss nan at step 9; lower lr or set grad_clip"
    with pytest.raises(TrainingDiverged, match=r"every final_grid point diverged; the last: .*lr=20: training diverged"):
        fit_selected(build, load_job_config("smoke", final_grid={"lr": [10.0, 20.0]}), tiny_store, tmp_path / "b", False, "cpu", validate=False)


def test_a_finalist_that_diverges_is_left_out_and_the_others_compete(tmp_path, monkeypatch, capsys):
    """One of several finalists whose final training diverged ended the whole job after its
    search (and again when continued): the others are still a selection."""
    import math

    from recnas.errors import TrainingDiverged
    from recnas.search.pipeline import run_job
    from tests.conftest import diverge_one_finalist

    failed, every = diverge_one_finalist(monkeypatch)
    report = run_job(load_job_config("smoke", baselines=["lr"], finalists=2), tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    bad = failed[0]
    assert f"warning: finalist {bad} left out: {tmp_path / 'run' / 'finalists' / bad}: training diverged: loss nan at step 9" in " ".join(out.split())
    chosen = [f for f in report["finalists"] if f["chosen"]]
    assert len(chosen) == 1 and chosen[0]["key"] != bad and math.isfinite(chosen[0]["val_logloss"])
    assert [f for f in report["finalists"] if f["key"] == bad][0]["val_logloss"] == math.inf
    every["one"] = False
    with pytest.raises(TrainingDiverged, match=r"every finalist \(2\) diverged in its final training; the last: "):
        run_job(load_job_config("smoke", baselines=["lr"], finalists=2), tmp_path / "run2", progress=False)


@pytest.mark.parametrize("objective, note", [
    ({"kind": "penalized", "targets": {"flops": 1000}}, "ranked by log loss plus its cost penalty"),
    ({"kind": "pareto"}, "kept a front of log loss and costs"),
    (None, None),
])
def test_show_says_when_the_search_ranked_otherwise(tmp_path, monkeypatch, capsys, objective, note):
    """Under a penalized objective the search's best candidate may be missing from `show`'s
    log-loss list: the title said nothing of it."""
    import yaml

    from tests.test_cli_models import run

    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    store.put("a", "{}", {"logloss": 0.4, "flops": 5000})
    store.close()
    if objective is not None:
        (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"objective": objective}))
    code, out, _ = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    title = " ".join(out.split())
    assert code == 0 and (note in title if note else "ranked by" not in title and "front" not in title), out


def test_show_says_how_many_candidates_results_md_reports(tmp_path, monkeypatch, capsys):
    """A run continued with fewer generations keeps the earlier search's candidates in its
    store: `show` titled its list "14 candidates evaluated" above results.md's "Search: 8
    candidates evaluated", without a word on which was which."""
    from tests.test_cli_models import run

    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    for i, key in enumerate("abcd"):
        store.put(key, "{}", {"logloss": 0.4 + i / 100})
    report = {"dataset": "tiny", "models": [], "search": {"candidates_in_store": 4}}
    write_report(tmp_path / "run", report, store, "search", Objective(), keys={"a", "b"})
    store.close()
    code, out, _ = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    title = " ".join(out.split())
    assert code == 0 and "4 candidates evaluated" in title and "the search of results.md scored 2 of them" in title, out
    assert "Search: 2 candidates evaluated" in out  # results.md, printed below
    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    write_report(tmp_path / "run", report, store, "search", Objective())  # every one of them
    store.close()
    code, out, _ = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    assert code == 0 and "results.md scored" not in " ".join(out.split()), out


def test_show_names_the_params_column_as_results_md_does(tmp_path, monkeypatch, capsys):
    """`params` are the dense parameters (results.md's "dense params", the tables apart): show
    headed them "params", beside a results.md with an "emb. params" column too."""
    from tests.test_cli_models import run

    store = ResultsStore(tmp_path / "run" / "search.sqlite")
    store.put("a", "{}", {"logloss": 0.4, "params": 1234.0, "embedding_params": 99999.0})
    store.close()
    code, out, _ = run(monkeypatch, capsys, "search", "show", tmp_path / "run")
    header = next(line for line in out.splitlines() if "key" in line)
    assert code == 0 and "dense params" in header and "1,234" in out, out


def test_a_run_continued_on_a_store_made_again_with_other_rows_is_refused_before_any_work(tmp_path):
    """Scored from scratch, nothing but the run folder ties the stored scores to their rows: a
    store made again in place (same path, shape and vocabulary, other rows) reused them without
    a word. The run's data.json is checked before any work; a copy of the same store continues."""
    import shutil

    from recnas.errors import CheckpointError, ConfigError
    from recnas.search.pipeline import run_job
    from tests.conftest import make_tiny_store

    data, out = tmp_path / "data", tmp_path / "run"
    make_tiny_store(data, seed=0)
    cfg = load_job_config("smoke", data=str(data), scoring="scratch", baselines=["lr"], evolution={"population": 4, "sample_size": 2, "children": 2, "generations": 1})
    first = run_job(cfg, out, progress=False)
    assert json.loads((out / "data.json").read_text())["rows"] == first_rows(data)
    shutil.copytree(data, tmp_path / "copy")
    shutil.rmtree(data)
    shutil.copytree(tmp_path / "copy", data)  # the very same rows again: continues
    assert run_job(cfg, out, progress=False)["models"][0]["test_logloss"] == first["models"][0]["test_logloss"]
    shutil.rmtree(data)
    make_tiny_store(data, seed=1)  # other rows, same shape
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=r"data.json: the run was trained on another dataset than .*give the job another --out"):
        run_job(cfg, out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing trained, nothing written
    (out / "data.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="data.json: not the record of a run's data"):
        run_job(cfg, out, progress=False)


def first_rows(data):
    return json.loads((data / "meta.json").read_text())["rows"]
