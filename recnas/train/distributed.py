"""Data-parallel training through PyTorch DDP, launched by torchrun (no home-made cluster layer).

`recnas supernet train --nproc N` re-runs the same command under
`python -m torch.distributed.run --standalone --nproc_per_node N`; each process then finds
RANK / WORLD_SIZE in its environment. Every rank seeds its architecture sampler identically,
so all ranks train the same path each step and DDP's gradient average is well defined; the
loader gives rank r the r-th slice of every global batch.

A user error inside the ranks (a RecnasError: an architecture that does not fit the space, a
bad --inherit checkpoint) is not printed by the ranks: each leaves its message in a folder the
launcher made (recnas.rank_errors), and the launcher prints one of them once and exits 2, as a
single-process run would. Printed by the ranks it came once per rank, and rank 0 could be
killed by torchrun (when another rank failed first) before printing it at all.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from recnas.rank_errors import ERROR_DIR_ENV, OUT_OF_MEMORY, first_error
from recnas.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun): known before the process
    group exists, so output can be set up for rank 0 alone from the start."""
    return int(os.environ.get("RANK", "0"))


def current(device: torch.device) -> DistInfo:
    """The process group this process belongs to (initialising it from torchrun's env once):
    NCCL, one GPU per rank, for a run that trains on CUDA (`device`), gloo on the CPU. It took NCCL wherever CUDA was, so a `device: cpu` run on a machine of
    one GPU set rank 1's GPU 1 and failed with CUDA's "invalid device ordinal" traceback."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def check_gpus(nproc: int, device: torch.device) -> None:
    """Before the launch: a CUDA run takes one GPU per process, so it needs `nproc` of them (rank
    r set GPU r, and a rank past the last GPU failed with a CUDA traceback after the launch)."""
    if device.type == "cuda" and nproc > (n := torch.cuda.device_count()):
        raise ConfigError(f"--nproc {nproc}: a run on CUDA takes one GPU per process, and this machine has {n}; give --nproc of at most {n}, or set device: cpu (--device cpu) to train {nproc} processes on the CPU")


def device_for(info: DistInfo, requested: torch.device) -> torch.device:
    """One GPU per process under NCCL; CPU ranks share the host."""
    if info.enabled and requested.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return requested


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DDP; unused parameters are expected (a supernet step touches one path only)."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=True)


def mean_over_ranks(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a per-rank scalar over all ranks, on every rank (all must call it together).
    A logged train_loss is each rank's loss on its own slice; the ranks' slices of a training
    batch are equal in size, so their mean is the loss of the whole global batch, as one
    process on that batch would log it."""
    if not info.enabled:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)  # a sum: gloo has no average
    return total / info.world_size


LAUNCHER_ENV = "RECNAS_LAUNCHER_PID"  # set by `launch` for the ranks it starts


def follow_launcher() -> None:
    """End this rank when its launcher dies. torchrun starts each rank in a session of its own,
    so a launcher killed hard (SIGKILL, the OOM killer) left its ranks training on as orphans,
    while the run folder's lock, held by the launcher alone, was gone: a `--resume` was let in
    while they still wrote there. Linux only (prctl); elsewhere they may outlive it as before."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if launcher is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(launcher):  # it died before the line above
        os.kill(os.getpid(), signal.SIGKILL)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group together once training is done. Left to interpreter exit, gloo's
    threads can be torn down mid-flight: one rank then dies of SIGABRT ("terminate called
    without an active exception") after the run was written, failing the whole launch."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> None:
    """Run `recnas <argv>` in `nproc` processes under torchrun, here in this process so that its
    failure report can be replaced: a user error reported by a rank is raised here as a
    RecnasError (one `error:` line, exit code 2), a rank's out-of-memory as a MemoryError (one
    line, exit code 1); Ctrl-C raises KeyboardInterrupt (as in one
    process); any other failure raises torchrun's ChildFailedError with its details."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from recnas.errors import RecnasError

    args = get_args_parser().parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "recnas", *argv])
    # torchrun's own lines: elastic's "failed (exitcode...)" and "Received 2 death signal" (the
    # error or "interrupted" says it) and run's OMP_NUM_THREADS banner, printed before every
    # launch's one line. Most of these loggers set their own level, so the parent's alone left
    # the death-signal line and the banner
    names = ("torch.distributed.run", "torch.distributed.elastic", *(n for n in list(logging.Logger.manager.loggerDict) if n.startswith("torch.distributed.elastic.")))
    quiet = {logger: logger.level for logger in map(logging.getLogger, names)}
    with tempfile.TemporaryDirectory(prefix="recnas-errors-") as folder:
        os.environ[ERROR_DIR_ENV] = folder
        os.environ[LAUNCHER_ENV] = str(os.getpid())
        for logger in quiet:
            logger.setLevel(logging.CRITICAL)
        try:
            run(args)
        except ChildFailedError:
            report = first_error(Path(folder))
            if report is None:
                raise
            kind, message = report
            if kind == OUT_OF_MEMORY:  # reported as without --nproc: one line, exit 1
                raise MemoryError(message) from None
            raise RecnasError(message) from None
        except SignalException as exc:  # torchrun's handler, after stopping the ranks: Ctrl-C
            # used to end in its traceback (and exit 1); now as without --nproc: "interrupted", 130
            if exc.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise SystemExit(128 + int(exc.sigval)) from None  # e.g. SIGTERM: the code a kill gives
        finally:
            for logger, level in quiet.items():
                logger.setLevel(level)
            del os.environ[ERROR_DIR_ENV], os.environ[LAUNCHER_ENV]
