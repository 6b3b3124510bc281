"""Where candidate evaluations run: in this process (default) or on a Ray cluster.

Ray (never a home-made cluster layer): each actor loads the supernet checkpoint and the
data store once, then scores candidates. Actors are restartable and their tasks retried, so
a worker that dies has its candidate re-run elsewhere; the driver writes every result to the
same SQLite store, so nothing is lost.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from recnas.errors import ConfigError, RecnasError, WorkerStartError
from recnas.search.evaluator import Genotype


class _Worker:
    """One Ray actor: a CandidateEvaluator built from files and plain settings, so it needs no
    pickled model (no supernet at all when candidates are scored from scratch)."""

    def __init__(self, space: dict, data_dir: str, train_cfg: dict | None, eval_rows: int | None, supernet_path: str | None, threads: int = 1):
        import torch

        from recnas.data.store import CTRStore
        from recnas.environment import tf32_for_this_process
        from recnas.search.evaluator import CandidateEvaluator
        from recnas.space import SearchSpace
        from recnas.train import TrainConfig
        from recnas.train.model_factory import load_trained

        torch.set_num_threads(threads)
        tf32_for_this_process()  # scored as the serial executor scores inside the job (run_job)
        # A RecnasError here (the store or the checkpoint missing or corrupt on this node) is kept
        # and raised by `evaluate`, not raised from the constructor: an actor whose constructor
        # raises dies (for good: Ray does not restart it), and the driver then gets an
        # ActorDiedError holding the error only as a ~40-line traceback in text, so the CLI could
        # not print its one `error:` line. Other errors (bugs) still end the actor as before.
        self.init_error: RecnasError | None = None
        try:
            supernet = None if supernet_path is None else load_trained(supernet_path)[0].eval()
            cfg = None if train_cfg is None else TrainConfig(**train_cfg)
            self.evaluator = CandidateEvaluator(SearchSpace(**space), CTRStore(data_dir), cfg, eval_rows, supernet=supernet)
        except RecnasError as exc:
            self.init_error = exc

    def evaluate(self, arch_json: str, hardware_json: str | None) -> dict:
        try:
            return self._evaluate(arch_json, hardware_json)
        except Exception as exc:
            sent = portable_error(exc)
            if sent is exc:
                raise
            raise sent from exc  # the worker's traceback, which Ray carries as text, keeps the original

    def _evaluate(self, arch_json: str, hardware_json: str | None) -> dict:
        from recnas.space import Architecture

        if self.init_error is not None:
            raise self.init_error

        hw = None
        if hardware_json is not None:
            from recnas.hardware import PIMConfig

            hw = PIMConfig.model_validate_json(hardware_json)
        return self.evaluator(Genotype(Architecture.model_validate_json(arch_json), hw))


def _rebuilt_as_itself(exc: Exception) -> bool:
    """Whether Ray rebuilds `exc` on the driver as it was raised in a worker. Ray pickles it
    there and unpickles it here, which calls its class with its `args`: a class whose constructor
    takes other arguments than its message fails (a RecnasError with a path and a change beside
    it) or says another message (one that appends its hint to what it is given: the hint twice).
    Ray 2.11 then makes `RayTaskError(ItsClass)`, calling its class's `__new__` with the
    exception alone, outside the try that falls back to a plain RayTaskError (Ray 2.60 has it
    inside): pydantic's ValidationError needs its line errors there, so the driver got Ray's own
    TypeError ("ValidationError.__new__() missing 1 required positional argument: 'line_errors'")
    instead of the error. Plain pickle, not Ray's cloudpickle: a class it cannot import (none
    of recnas's) is sent as the class above it, with its message, which loses nothing a user sees."""
    try:
        again = pickle.loads(pickle.dumps(exc))
        type(exc).__new__(type(exc), exc)
    except Exception:
        return False
    return type(again) is type(exc) and str(again) == str(exc)


def portable_error(exc: Exception) -> Exception:
    """What a worker raises for `exc`: `exc` itself when Ray rebuilds it as it was on the driver
    (`_rebuilt_as_itself`), else the nearest class above its own that is recnas's (recnas.errors)
    or Python's, with its message: a CheckpointError that the driver raises as itself (the same
    line the serial executor gives), a ValueError for a pydantic error (a bug: Ray's
    RayTaskError, with the worker's traceback), never Ray's own error about rebuilding it."""
    if _rebuilt_as_itself(exc):
        return exc
    message = str(exc)
    for cls in type(exc).__mro__[1:]:
        if issubclass(cls, Exception) and cls.__module__ in ("builtins", "recnas.errors"):
            try:
                plain = cls(message)
            except Exception:
                continue
            if _rebuilt_as_itself(plain):
                return plain
    return Exception(message)


def connect_ray(address: str | None = None, init_kwargs: dict | None = None, workers: int | None = None):
    """Ray, initialised (joining `address` if given): called before a job's supernet trains, so
    an unreachable cluster fails in seconds, not after the most expensive stage. `workers`
    actors, one CPU each, must fit the cluster's CPUs: those beyond them were never placed, and
    the search waited on them forever."""
    try:
        import ray
    except ImportError:
        # not `pip install -e '.[ray]'` alone: that names the folder it runs in, which is
        # recnas's checkout only for an editable install, not for one from a wheel
        raise ConfigError("executor 'ray' needs Ray, an optional dependency: pip install 'ray>=2.11' (in a checkout of recnas: pip install -e '.[ray]')") from None
    if not ray.is_initialized():
        if address is not None:
            _check_reachable(address)
        try:
            ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False, **(init_kwargs or {}))
        except ConnectionError as exc:
            raise ConfigError(
                f"cannot join the Ray cluster at {address}: {exc} (a cluster with token authentication also needs its token: "
                "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)"
            ) from None
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if workers is not None and workers > cpus:
        where = "local Ray instance" if address is None else f"Ray cluster at {address}"
        raise ConfigError(
            f"ray_workers {workers} exceeds the {cpus} CPUs of the {where}: each worker takes one CPU and the "
            f"others would never start, so the search would wait forever; set ray_workers to at most {cpus}, or leave it out (one per CPU)"
        )
    return ray


def _check_reachable(address: str) -> None:
    """A HOST:PORT where nothing listens is refused at once: Ray's own connect retries it 20
    times, about 40 s each, so a mistyped port hung the job for some 14 minutes (printing Ray's
    connection warnings) before it failed. Other forms (ray://..., auto) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot join the Ray cluster at {address}: nothing answers there ({exc.strerror or exc}); "
            "start one there (`ray start --head --port PORT`) or give the address that `ray start` printed"
        ) from None


def worker_start_error(error_msg: str) -> WorkerStartError:
    """One line from Ray's report of an actor whose constructor raised something other than a
    RecnasError (an ImportError on a node without recnas, say): its node and the error's last
    line, not the ~40-line traceback Ray's ActorDiedError carried to the CLI."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", error_msg)
    node = re.search(r"\bip=([^,)\s]+)", text)
    # the raised exception's own line: the last one at column 0 naming an exception (a pydantic
    # error goes on with indented details and a link; traceback lines are indented)
    heads = [line.strip() for line in text.splitlines() if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", line)]
    last = heads[-1] if heads else "unknown error"
    where = f"node {node.group(1)}" if node else "its node"
    return WorkerStartError(f"a Ray worker could not start on {where}: {last}; every node needs recnas and its dependencies installed, at the versions of this machine")


class RayExecutor:
    """`evaluate_many(genotypes) -> metrics` over a pool of Ray actors (joins `address` if given),
    each scoring as `CandidateEvaluator(space, store at data_dir, train_cfg, eval_rows)` with the
    supernet at `supernet_path` (None: from scratch)."""

    def __init__(self, space, data_dir, train_cfg=None, eval_rows=None, supernet_path=None, workers: int | None = None, address: str | None = None, max_retries: int = 3, init_kwargs: dict | None = None):
        if supernet_path is not None and not Path(supernet_path).exists():
            raise ConfigError(f"{supernet_path}: supernet checkpoint not found")
        ray = self.ray = connect_ray(address, init_kwargs, workers)
        from ray.util import ActorPool
        n = workers or max(1, int(ray.available_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1, max_restarts=max_retries, max_task_retries=max_retries)(_Worker)
        tc = None if train_cfg is None else train_cfg.model_dump()
        # absolute: the actors work in their cluster's folder, not this job's, so the relative
        # paths of the default `--out runs/search` were not found there ("checkpoint not found")
        sn = None if supernet_path is None else str(Path(supernet_path).resolve())
        self.actors = [actor.remote(space.model_dump(mode="json"), str(Path(data_dir).resolve()), tc, eval_rows, sn) for _ in range(n)]
        self.pool = ActorPool(self.actors)

    def __call__(self, genos: list[Genotype]) -> list[dict]:
        """The candidates' metrics, in order. A RecnasError raised in an actor (its store or
        checkpoint missing there, an architecture the space refuses) is raised here as itself,
        same class and message: Ray delivers it wrapped in a RayTaskError whose text is the
        actor's whole traceback, which the CLI printed instead of one `error:` line. Any other
        failure (a bug) propagates as Ray raised it, with its details. An error Ray cannot
        rebuild here as it was (pydantic's ValidationError, a RecnasError taking other arguments
        than its message) leaves the worker as the nearest class above it, with its message
        (`portable_error`). Not retried: Ray retries an actor task only when the actor dies, not
        when it raises."""
        refs = []

        def submit(actor, g):
            refs.append(actor.evaluate.remote(g.arch.to_json(), g.hardware_json))
            return refs[-1]

        try:
            return list(self.pool.map(submit, genos))
        except self.ray.exceptions.RayTaskError as exc:
            if not isinstance(exc.cause, RecnasError):
                raise
            self._read_failures(refs)
            raise exc.cause.with_traceback(None) from None
        except self.ray.exceptions.RayActorError as exc:
            if not getattr(exc, "_actor_init_failed", False):  # a worker lost mid-run, past its retries
                raise
            self._read_failures(refs)
            raise worker_start_error(str(getattr(exc, "error_msg", exc))) from None

    def _read_failures(self, refs, timeout: float = 10.0) -> None:
        """Read the results of the tasks still running when one failed (the other actors', at
        most one each), waiting up to `timeout` s: Ray logs every failed task whose result
        nobody read ("Unhandled error", with the actor's whole traceback) when the job ends, so
        the other actors' copies of the same error followed the one `error:` line."""
        done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for ref in done:
            try:
                self.ray.get(ref)
            except Exception:
                pass

    def shutdown(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
