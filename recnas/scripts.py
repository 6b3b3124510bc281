"""What the scripts in benchmarks/ share: their entry point and the argparse types of their
output paths and sizes. A user error there (an unknown budget, a missing store, a bad config,
an output path under a file, a size of 0) is one line and exit code 2, as in the CLI
(`recnas.cli.main`), never a traceback; an output path that cannot be written or a size that
means nothing is refused before the run, not after it. Also what several of them build on:
a synthetic store deleted at exit, the Criteo-like table sizes, the kernel timers' loop."""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from recnas.errors import ConfigError, RecnasError
from recnas.staging import check_parent

if TYPE_CHECKING:  # for annotations only: the functions below import torch where they use it
    import torch

# Criteo Kaggle field cardinalities are very uneven: a few fields have millions of values,
# others a handful. Rough orders of magnitude, per field C1..C26.
CRITEO_CARDINALITY = (1460, 583, 10_000_000, 2_000_000, 305, 24, 12517, 633, 3, 93145, 5683, 8_000_000, 3194, 27, 14992, 5_000_000, 10, 5652, 2173, 4, 7_000_000, 18, 15, 286181, 105, 142572)


def run_script(main: Callable[[], object], out_option: str = "--out") -> None:
    """Run a benchmark script's `main`; a `RecnasError` is printed as `error: ...` on stderr
    and the process exits with code 2. The library's errors name the CLI's `--out`; a script
    whose output folder is another option (`out_option`, e.g. --out-dir) has them name that
    one. On CUDA the script's float32 matmuls run as TF32, as the trainers run them
    (recnas.environment.tf32_matmuls)."""
    import re

    import torch

    from recnas.environment import tf32_matmuls

    try:
        with tf32_matmuls(torch.cuda.is_available()):
            main()
    except RecnasError as exc:
        message = str(exc) if out_option == "--out" else re.sub(r"--out(?![-\w])", out_option, str(exc))
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _creatable(path: Path) -> None:
    try:
        check_parent(path, "output")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def output_file(text: str) -> Path:
    """argparse type of a result file (the JSON a script writes): not a folder, and not below
    a regular file."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a directory; give the path of a file")
    _creatable(path)
    return path


def output_dir(text: str) -> Path:
    """argparse type of a folder a script writes into: not an existing file, and not below a
    regular file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} exists and is not a directory")
    _creatable(path)
    return path


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    """An argparse type of an integer >= `low`, its docstring `what`: one parser for every such
    option, its message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__doc__ = what
    return parse


positive_int = _int_at_least(1, "argparse type of a size or count (rows, steps, batch, repeats): an integer >= 1.")
non_negative_int = _int_at_least(0, 'argparse type of a count where 0 means "the default" (e.g. --threads 0: torch\'s own).')


def provenance(result: dict, args: argparse.Namespace, device: str | torch.device = "cpu") -> dict:
    """`result` (a script's JSON) with what it was computed with, where it does not say already:
    the date (UTC), the environment (versions, CPU threads, device: `recnas.environment`) and
    every argument of the run, paths as text."""
    from datetime import datetime, timezone

    from recnas.environment import environment

    if "date" not in result and "when" not in result:
        result["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result.setdefault("environment", environment(device))
    result.setdefault("args", json.loads(json.dumps(vars(args), default=str)))  # a Path (or a list of them) as text
    return result


def seed_list(text: str) -> list[int]:
    """argparse type of a comma-separated list of seeds (`--seeds 0,1,2`): distinct integers
    >= 0 (a seed given twice would be run once and counted twice in every mean, spread and
    verdict)."""
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    if min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"must be distinct integers >= 0, got {text!r}")
    return seeds


def positive_ints(text: str) -> list[int]:
    """argparse type of a comma-separated list of sizes (`1024,4096`): each an integer >= 1."""
    try:
        return [positive_int(v) for v in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 1, got {text!r}") from None


def positive_float(text: str) -> float:
    """argparse type of a rate or scale: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _start_worker(threads: int) -> None:
    """A `side_by_side` process: this script's thread count and, on CUDA, TF32 matmuls (as
    `run_script` runs the script's own process), for the whole life of the worker."""
    import torch

    from recnas.environment import tf32_for_this_process

    torch.set_num_threads(threads)
    tf32_for_this_process()


def side_by_side(fn: Callable, tasks: list, jobs: int, done: Callable | None = None) -> list[tuple[object, BaseException]]:
    """`fn(task)` for every task, each in its own spawned process (a CUDA context does not
    survive a fork), `jobs` at a time and with this process's torch thread count (another one
    rounds the sums otherwise, and the results differ from a run in this process). `done(task,
    result)` runs here as each one finishes, so a script can report and save it even if a later
    one fails or the run is stopped. A failure does not stop the others; returns the failed
    (task, exception) pairs, in the order given."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    failed = {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(torch.get_num_threads(),)) as pool:
        futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            if future.exception() is not None:
                failed[i] = future.exception()
            elif done is not None:
                done(tasks[i], future.result())
    return [(tasks[i], failed[i]) for i in sorted(failed)]


def failures(errors: list[BaseException], total: int, what: str, kept: str) -> RecnasError:
    """The one-line error of a side-by-side run of which `len(errors)` of `total` (`what`, e.g.
    "seeds") failed: how many, the first failure, where the finished ones are (`kept`), and that
    a re-run goes on from them (with fewer jobs, where the GPU ran out of memory)."""
    import torch

    exc = errors[0]
    first = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc).strip() else type(exc).__name__
    hint = ", with fewer --jobs," if any(isinstance(e, torch.OutOfMemoryError) for e in errors) else ""
    return RecnasError(f"{len(errors)} of {total} {what} failed (the first: {first}); {kept}a re-run{hint} loads what finished and goes on from the others' checkpoints")


def temporary_synthetic_store(rows: int, seed: int = 0):
    """The synthetic benchmark (`rows` rows) generated into a temporary folder that is deleted
    when the script exits, normally, on an error or on Ctrl-C (the scripts timing a model on it
    used to leave one such store in the temp folder per run)."""
    from recnas.data.store import CTRStore
    from recnas.data.synthetic import generate

    tmp = Path(tempfile.mkdtemp(prefix="recnas-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    generate(tmp / "data", rows=rows, seed=seed)
    return CTRStore(tmp / "data")


def mean_seconds(fn: Callable[[], object], repeats: int, device: str | torch.device = "cpu", warmup: int = 3) -> float:
    """Mean wall seconds of a call of `fn` over `repeats` calls after `warmup` untimed ones,
    the device synchronised before and after (CUDA runs asynchronously)."""
    import torch

    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t) / repeats


def torch_device(text: str) -> str:
    """argparse type of a --device the script hands to torch: one torch knows, and present."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} requested but no CUDA device is available; use cpu")
    return text
