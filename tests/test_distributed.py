"""DDP on CPU (gloo, 2 processes via torchrun) equals one process on the same global batch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recnas.train.model_factory import load_trained


@pytest.fixture(autouse=True)
def _temp_folder_of_the_test(tmp_path, monkeypatch):
    """The launches' temporary folders in the test's own: torchrun leaves a torchelastic_* folder
    in the temp folder at every launch, and a hard-killed launcher its recnas-errors-* one (its
    cleanup never runs), so each run of this file left ~8 folders in /tmp. The commands run in
    subprocesses, which read TMPDIR afresh."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


SUPERNET = ("supernet", "train", "--space", "full-tiny")


def _run(tmp_path, store, name, batch, extra=(), steps=6, eval_every=0, command=SUPERNET):
    """`recnas COMMAND` (a training command; `recnas supernet train` by default) in a
    subprocess (under torchrun with --nproc); its output."""
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"batch_size: {batch}\nmax_steps: {steps}\neval_every: {eval_every}\ndevice: cpu\nlr: 0.01\nseed: 3\n")
    cmd = [sys.executable, "-m", "recnas", *command, "--data", str(store.dir), "--config", str(cfg), "--out", str(tmp_path / name), "--no-progress", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _train(tmp_path, store, name, batch, extra=(), command=SUPERNET):
    """Trained weights and the train_loss logged at the last step (its one evaluation)."""
    _run(tmp_path, store, name, batch, extra, eval_every=6, command=command)
    history = json.loads((tmp_path / name / "metrics.json").read_text())["history"]
    return load_trained(tmp_path / name / "model.pt")[0].state_dict(), history[-1]["train_loss"]


def test_ddp_two_processes_match_one_process_on_the_global_batch(tmp_path, tiny_store):
    single, single_loss = _train(tmp_path, tiny_store, "single", 64)
    ddp, ddp_loss = _train(tmp_path, tiny_store, "ddp", 32, ("--nproc", "2"))
    first, _ = _train(tmp_path, tiny_store, "first", 64, ("--steps", "1"))
    # the logged loss is the global batch's (the mean over ranks), not rank 0's half of it
    assert abs(ddp_loss - single_loss) < 1e-4 * single_loss, (ddp_loss, single_loss)
    assert single.keys() == ddp.keys()
    # Adam divides by sqrt(v): float reduction-order noise in near-zero gradients shows up as
    # small absolute differences, so compare the DDP-vs-single gap with how far training moved
    gap = sum((ddp[k] - single[k]).float().norm() ** 2 for k in single) ** 0.5
    moved = sum((single[k] - first[k]).float().norm() ** 2 for k in single) ** 0.5
    assert moved > 0.05  # five more steps changed the weights: the comparison is not vacuous
    assert gap < 0.002 * moved, (float(gap), float(moved))


def test_baseline_train_takes_nproc_and_two_processes_match_one_on_the_global_batch(tmp_path, tiny_store):
    """`baseline train` had no --nproc ("No such option"), while supernet and subnet train took
    it: it trains through the same trainer, so 2 gloo ranks of batch 32 train what one process
    of batch 64 does."""
    from recnas.baselines import build_baseline
    from recnas.train import seed_everything

    deepfm = ("baseline", "train", "deepfm", "--hparams", '{"mlp": [16]}')
    single, single_loss = _train(tmp_path, tiny_store, "single", 64, command=deepfm)
    ddp, ddp_loss = _train(tmp_path, tiny_store, "ddp", 32, ("--nproc", "2"), command=deepfm)
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["environment"]["world_size"] == 2
    assert abs(ddp_loss - single_loss) < 1e-4 * single_loss, (ddp_loss, single_loss)
    seed_everything(3)  # the weights both runs started from: the config's seed, then the model
    start = build_baseline("deepfm", tiny_store.meta, mlp=[16]).state_dict()
    assert single.keys() == ddp.keys() == start.keys()
    gap = sum((ddp[k] - single[k]).float().norm() ** 2 for k in single) ** 0.5
    moved = sum((single[k] - start[k]).float().norm() ** 2 for k in single) ** 0.5
    assert moved > 0.05  # training changed the weights: the comparison is not vacuous
    assert gap < 0.002 * moved, (float(gap), float(moved))


def test_only_rank_zero_prints_log_lines(tmp_path, tiny_store):
    """Each rank used to print every evaluation line, so each appeared once per process."""
    r = _run(tmp_path, tiny_store, "logs", 32, ("--nproc", "2"), steps=2, eval_every=1)
    lines = (r.stdout + r.stderr).splitlines()
    for step in (1, 2):
        assert sum(line.startswith(f"step {step} ") for line in lines) == 1, r.stderr
    assert sum(line.startswith("trained 2 steps") for line in lines) == 1, r.stdout


def test_a_bad_config_under_nproc_is_one_error_line(tmp_path, tiny_store):
    """Checked before torchrun starts: it used to be printed by every rank, then torchrun's traceback."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("max_stepz: 2\n")
    cmd = [sys.executable, "-m", "recnas", "supernet", "train", "--data", str(tiny_store.dir), "--space", "full-tiny", "--config", str(cfg), "--out", str(tmp_path / "o"), "--nproc", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 2
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [line for line in r.stderr.splitlines() if line.strip()], r.stderr
    assert r.stderr.count("error:") == 1 and "max_stepz" in r.stderr


def test_a_user_error_inside_the_ranks_is_one_error_line_and_exit_code_2(tmp_path, tiny_store):
    """Raised after torchrun started (the architecture is read by every rank): it used to be
    printed by each rank, then torchrun's ChildFailedError traceback, exit code 1."""
    arch = tmp_path / "arch.json"
    arch.write_text("{}")
    error, output = _one_error_line(tmp_path, 2, "subnet", "train", "--data", tiny_store.dir, "--arch", arch, "--space", "full-tiny")
    assert "invalid architecture" in error, output
    # nothing but that line: torchrun's four-line OMP_NUM_THREADS banner came before it
    assert [line for line in output.splitlines() if line.strip()] == [error], output


def _one_error_line(tmp_path, code: int, *args, address_space: int | None = None) -> tuple[str, str]:
    """`recnas ARGS` under --nproc 2 with a two-step CPU config, into tmp_path/o: it exits with
    `code` after one `error:` line and no traceback (no rank's, no torchrun's). Returns that
    line and the whole output. `address_space`: the most virtual memory (bytes) each process
    may map (RLIMIT_AS), so an allocation past it fails on any machine."""
    import resource

    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 32\nmax_steps: 2\neval_every: 0\ndevice: cpu\n")
    cmd = [sys.executable, "-m", "recnas", *map(str, args), "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-progress", "--nproc", "2"]
    limit = None if address_space is None else (lambda: resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space)))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, preexec_fn=limit)
    output = r.stdout + r.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert r.returncode == code and len(errors) == 1, output
    assert "Traceback" not in output and "ChildFailedError" not in output and "Connection closed" not in output, output
    return errors[0], output


def test_a_train_split_smaller_than_one_global_batch_is_named_before_the_processes_start(tmp_path, tiny_store, monkeypatch, capsys):
    """480 rows and 2 processes x batch 256: no whole global batch, so no step. It used to be
    refused inside the ranks as "the train split has no rows"."""
    from recnas.errors import DataError
    from recnas.train.plan import check_global_batch
    from tests.test_cli_models import error_line, run

    launched = []
    monkeypatch.setattr("recnas.train.distributed.launch", lambda *a: launched.append(a))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 256\nmax_steps: 2\ndevice: cpu\n")
    code, _, err = run(monkeypatch, capsys, "supernet", "train", "--data", tiny_store.dir, "--space", "small-tiny", "--config", cfg, "--out", tmp_path / "o", "--nproc", "2")
    assert code == 2 and not launched and not (tmp_path / "o").exists()
    assert "the train split's 480 rows are fewer than one global batch of 2 processes x batch_size 256 = 512 rows" in error_line(err)
    check_global_batch(480, 240, 2)  # exactly one global batch: fine
    check_global_batch(480, 4096, 1)  # one process takes the partial batch
    with pytest.raises(DataError, match="fewer than one global batch"):
        check_global_batch(100, 64, 2)


def test_an_interrupted_rank_leaves_without_the_interpreter_s_teardown(monkeypatch, capsys):
    """Ctrl-C under --nproc at times printed "terminate called without an active exception"
    under the launcher's "interrupted": a rank's gloo threads, still running, torn down with the
    interpreter (SIGABRT). A rank now leaves at once (os._exit, its streams flushed) with 130, and
    says nothing (the launcher does); one process alone still says it and exits through SystemExit."""
    import recnas.cli as cli

    left = []
    monkeypatch.setattr(cli.os, "_exit", lambda code: left.append(code) or (_ for _ in ()).throw(SystemExit(code)))
    monkeypatch.setattr(cli, "launched_rank", lambda: True)
    with pytest.raises(SystemExit):
        cli._interrupted()
    assert left == [130] and capsys.readouterr().err == ""
    monkeypatch.setattr(cli, "launched_rank", lambda: False)
    with pytest.raises(SystemExit) as info:
        cli._interrupted()
    assert info.value.code == 130 and left == [130] and capsys.readouterr().err == "interrupted\n"


def test_ctrl_c_under_nproc_is_one_interrupted_line_and_exit_code_130(tmp_path, tiny_store):
    """Ctrl-C (SIGINT to the terminal's process group: the launcher and its ranks) used to end in
    torchrun's SignalException traceback, exit code 1, after an "interrupted" from each rank. Now
    as without --nproc: one "interrupted", exit code 130, and the checkpoint to resume from."""
    import os
    import signal
    import time

    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 32\nmax_steps: 1000000\neval_every: 0\ncheckpoint_every: 1\ndevice: cpu\n")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "recnas", "supernet", "train", "--data", str(tiny_store.dir), "--space", "small-tiny", "--config", str(cfg), "--out", str(out), "--no-progress", "--nproc", "2"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 200
        while not (out / "checkpoint.pt").exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / "checkpoint.pt").exists(), "training did not start"
        os.killpg(p.pid, signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr and (stdout + stderr).count("interrupted") == 1, stderr
    # nor torchrun's "Received 2 death signal, shutting down workers" (its logger has its own level)
    assert [line for line in stderr.splitlines() if line.strip()] == ["interrupted"], stderr


def test_an_error_of_rank_zero_alone_is_one_error_line_without_the_other_ranks_traceback(tmp_path, tiny_store):
    """Rank 0 alone writes the run's files, so an error writing them is its alone: the other
    rank, waiting for it at the closing barrier, used to print gloo's "Connection closed by
    peer" traceback before the launcher's one line. (Rank 0 now finds the folder in the way
    before training, `check_writable`, while the other rank waits in its first step.)"""
    (tmp_path / "o" / "model.pt").mkdir(parents=True)  # where rank 0 writes the model: no file can go there
    error, output = _one_error_line(tmp_path, 2, "supernet", "train", "--data", tiny_store.dir, "--space", "small-tiny", "--overwrite")
    assert "model.pt is a directory, where the run writes its model.pt file" in error, output


def test_out_of_memory_under_nproc_is_one_line_and_exit_code_1(tmp_path):
    """Embedding tables of 275 GB (four fields of 2**31 ids, the most a store holds, 8 wide)
    cannot be allocated: the ranks' out-of-memory line came once per rank, then torchrun's
    ChildFailedError traceback (no rank had reported an error). Now as without --nproc: one
    line, exit code 1, no run folder. Each process may map 48 GiB at most (one table is
    64 GiB): on a machine of 128 GiB the kernel let a table be allocated and its rank was
    killed while filling it (SIGKILL, torchrun's traceback), where a 24 GiB one refused it."""
    from tests.conftest import make_tiny_store

    store = make_tiny_store(tmp_path / "huge", vocab_sizes=(2**31,) * 4)
    error, output = _one_error_line(tmp_path, 1, "supernet", "train", "--data", store.dir, "--space", "small-tiny", address_space=48 << 30)
    assert error.startswith("error: out of memory (") and "can't allocate memory" in error, output
    assert not (tmp_path / "o").exists()


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ranks follow their launcher on Linux (prctl)")
def test_a_hard_killed_launcher_takes_its_ranks_with_it(tmp_path, tiny_store):
    """SIGKILL to the --nproc launcher alone (the OOM killer, `kill -9 PID`) used to leave its
    ranks (torchrun starts each in a session of its own) training on as orphans: the run
    folder's lock went with the launcher, so a `--resume` was let in while they still wrote
    checkpoints there. The ranks now die with it."""
    import os
    import signal
    import time

    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 32\nmax_steps: 1000000\neval_every: 0\ncheckpoint_every: 1\ndevice: cpu\n")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "recnas", "supernet", "train", "--data", str(tiny_store.dir), "--space", "small-tiny", "--config", str(cfg), "--out", str(out), "--no-progress", "--nproc", "2"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ranks = []
    try:
        deadline = time.monotonic() + 200
        while not (out / "checkpoint.pt").exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / "checkpoint.pt").exists(), "training did not start"
        ranks = _children(p.pid)
        assert len(ranks) == 2, ranks
        p.kill()
        p.wait(timeout=30)
        deadline = time.monotonic() + 30
        while (alive := [r for r in ranks if Path(f"/proc/{r}").exists() and not _zombie(r)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive, "the ranks outlived their hard-killed launcher"
    finally:
        for r in ranks:
            try:
                os.kill(r, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def test_a_cpu_run_on_a_cuda_machine_takes_gloo_and_no_gpu(monkeypatch):
    """A `device: cpu` run under --nproc on a CUDA machine took NCCL and set rank r's GPU r: on a
    machine of one GPU rank 1 failed with CUDA's "invalid device ordinal" traceback."""
    import torch

    from recnas.train import distributed

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: calls.append(("backend", backend)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    assert distributed.current(torch.device("cpu")) == distributed.DistInfo(1, 2, 1)
    assert calls == [("backend", "gloo")]
    calls.clear()
    distributed.current(torch.device("cuda"))
    assert calls == [("set_device", 1), ("backend", "nccl")]


@pytest.mark.parametrize("device, refused", [("auto", True), ("cuda", True), ("cpu", False)])
def test_more_processes_than_gpus_on_cuda_is_refused_before_the_launch(tmp_path, tiny_store, monkeypatch, capsys, device, refused):
    import torch

    from tests.test_cli_models import error_line, run

    launched = []
    monkeypatch.setattr("recnas.train.distributed.launch", lambda *a: launched.append(a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"batch_size: 32\nmax_steps: 2\ndevice: {device}\n")
    code, _, err = run(monkeypatch, capsys, "supernet", "train", "--data", tiny_store.dir, "--space", "small-tiny", "--config", cfg, "--out", tmp_path / "o", "--nproc", "2")
    if refused:
        assert code == 2 and not launched
        assert "--nproc 2: a run on CUDA takes one GPU per process, and this machine has 1; give --nproc of at most 1, or set device: cpu" in error_line(err)
    else:
        assert launched and "error" not in err


def test_device_cpu_under_nproc_takes_the_cpu_whatever_the_config_says(tmp_path, tiny_store, monkeypatch, capsys):
    """The GPUs were counted for the config's device before --device overrode it: `--device cpu
    --nproc 2` of a `device: cuda` config was refused on a machine of one GPU. The ranks re-run
    the command line, --device included."""
    import torch

    from tests.test_cli_models import run

    launched = []
    monkeypatch.setattr("recnas.train.distributed.launch", lambda *a: launched.append(a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 32\nmax_steps: 2\ndevice: cuda\n")
    code, _, err = run(monkeypatch, capsys, "supernet", "train", "--data", tiny_store.dir, "--space", "small-tiny", "--config", cfg, "--out", tmp_path / "o", "--nproc", "2", "--device", "cpu")
    assert code == 0 and "error" not in err, err
    (nproc, argv), = launched
    assert nproc == 2 and argv[argv.index("--device") + 1] == "cpu" and "--nproc" not in argv
