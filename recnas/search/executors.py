"""Where candidate evaluations run: in this process (default) or on a Ray cluster.

Ray (never a home-made cluster layer): each actor loads the supernet checkpoint and the
data store once, then scores candidates. Actors are restartable and their tasks retried, so
a worker that dies has its candidate re-run elsewhere; the driver writes every result to the
same SQLite store, so nothing is lost.
"""

from __future__ import annotations

from pathlib import Path

from recnas.errors import ConfigError
from recnas.search.evaluator import Genotype


class _Worker:
    """One Ray actor: a SupernetEvaluator built from files, so it needs no pickled model."""

    def __init__(self, supernet_path: str, data_dir: str, finetune: dict | None, eval_rows: int | None, threads: int = 1):
        import torch

        from recnas.data.store import CTRStore
        from recnas.search.evaluator import SupernetEvaluator
        from recnas.space import SearchSpace
        from recnas.train import TrainConfig
        from recnas.train.model_factory import load_trained

        torch.set_num_threads(threads)
        supernet, spec, _ = load_trained(supernet_path)
        cfg = None if finetune is None else TrainConfig(**finetune)
        self.evaluator = SupernetEvaluator(supernet.eval(), SearchSpace(**spec["space"]), CTRStore(data_dir), cfg, eval_rows)

    def evaluate(self, arch_json: str, hardware_json: str | None) -> dict:
        from recnas.space import Architecture

        hw = None
        if hardware_json is not None:
            from recnas.hardware import PIMConfig

            hw = PIMConfig.model_validate_json(hardware_json)
        return self.evaluator(Genotype(Architecture.model_validate_json(arch_json), hw))


def connect_ray(address: str | None = None, init_kwargs: dict | None = None):
    """Ray, initialised (joining `address` if given): called before a job's supernet trains, so
    an unreachable cluster fails in seconds, not after the most expensive stage."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor 'ray' needs Ray: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False, **(init_kwargs or {}))
        except ConnectionError as exc:
            raise ConfigError(
                f"cannot join the Ray cluster at {address}: {exc} (a cluster with token authentication also needs its token: "
                "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)"
            ) from None
    return ray


class RayExecutor:
    """`evaluate_many(genotypes) -> metrics` over a pool of Ray actors (joins `address` if given)."""

    def __init__(self, supernet_path, data_dir, finetune=None, eval_rows=None, workers: int | None = None, address: str | None = None, max_retries: int = 3, init_kwargs: dict | None = None):
        if not Path(supernet_path).exists():
            raise ConfigError(f"{supernet_path}: supernet checkpoint not found")
        ray = self.ray = connect_ray(address, init_kwargs)
        from ray.util import ActorPool
        n = workers or max(1, int(ray.available_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1, max_restarts=max_retries, max_task_retries=max_retries)(_Worker)
        ft = None if finetune is None else finetune.model_dump()
        self.actors = [actor.remote(str(supernet_path), str(data_dir), ft, eval_rows) for _ in range(n)]
        self.pool = ActorPool(self.actors)

    def __call__(self, genos: list[Genotype]) -> list[dict]:
        return list(self.pool.map(lambda a, g: a.evaluate.remote(g.arch.to_json(), g.hardware_json), genos))

    def shutdown(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
