"""Ray executor on a local 2-CPU Ray instance: same scores as the serial evaluator."""

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from recnas.search.evaluator import CandidateEvaluator, Genotype  # noqa: E402
from recnas.search.executors import RayExecutor  # noqa: E402
from recnas.space import get_space  # noqa: E402
from recnas.space.samplers import ArchSampler, random_architecture  # noqa: E402
from recnas.supernet import Supernet  # noqa: E402
from recnas.train import Trainer, TrainConfig  # noqa: E402
from recnas.train.model_factory import load_trained, supernet_spec  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_matches_serial_and_survives_a_dead_worker(tiny_store, tmp_path, ray_local):
    space = get_space("full-tiny")
    cfg = TrainConfig(batch_size=64, max_steps=5, eval_every=0, device="cpu")
    Trainer(Supernet(space, tiny_store.meta), cfg, tiny_store, out_dir=tmp_path / "sn", sampler=ArchSampler(space, seed=0), model_spec=supernet_spec(space, tiny_store.meta), progress=False).fit()
    finetune = TrainConfig(batch_size=64, max_steps=2, eval_every=0, restore_best=False, device="cpu")
    rng = np.random.default_rng(0)
    genos = [Genotype(random_architecture(rng, space)) for _ in range(6)]

    supernet, _, _ = load_trained(tmp_path / "sn" / "model.pt")
    serial = CandidateEvaluator(space, tiny_store, finetune, eval_rows=None, supernet=supernet)
    expected = [serial(g)["logloss"] for g in genos]

    ex = RayExecutor(space, tiny_store.dir, finetune, None, supernet_path=tmp_path / "sn" / "model.pt", workers=2)
    got = ex(genos)
    assert [m["logloss"] for m in got] == pytest.approx(expected, rel=1e-5)

    # kill a worker while candidates are queued on it: Ray restarts it and retries the task
    refs = [ex.actors[i % 2].evaluate.remote(g.arch.to_json(), None) for i, g in enumerate(genos)]
    ray.kill(ex.actors[0], no_restart=False)
    again = ray.get(refs)
    assert [m["logloss"] for m in again] == pytest.approx(expected, rel=1e-5)
    ex.shutdown()


def test_a_cluster_that_cannot_be_joined_is_one_config_error_with_the_token_hint(monkeypatch):
    """Ray 2.60's `ray start` turns token authentication on; a job without the token failed with
    only Ray's "Failed to connect", which does not say why (docs/search.md)."""
    from recnas.errors import ConfigError
    from recnas.search.executors import connect_ray

    def refuse(*args, **kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6390")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr("recnas.search.executors._check_reachable", lambda address: None)  # something answers there: Ray refuses it
    with pytest.raises(ConfigError, match=r"cannot join the Ray cluster at 10.0.0.1:6390: Failed to connect.*RAY_AUTH_TOKEN"):
        connect_ray("10.0.0.1:6390")


def test_ray_executor_scores_from_scratch_as_the_serial_evaluator_does(tiny_store, ray_local):
    """`scoring: scratch`: the actors need no supernet checkpoint, only the space and the store."""
    space = get_space("full-tiny")
    proxy = TrainConfig(batch_size=64, max_steps=3, eval_every=0, device="cpu")
    rng = np.random.default_rng(2)
    genos = [Genotype(random_architecture(rng, space)) for _ in range(3)]
    expected = [CandidateEvaluator(space, tiny_store, proxy, eval_rows=None)(g)["logloss"] for g in genos]
    ex = RayExecutor(space, tiny_store.dir, proxy, None, workers=2)
    assert [m["logloss"] for m in ex(genos)] == pytest.approx(expected, rel=1e-5)
    ex.shutdown()


def test_more_workers_than_the_cluster_has_cpus_is_refused_not_a_hang(tiny_store, ray_local):
    """Each actor takes one CPU: `ray_workers: 4` on a 2-CPU instance left two actors never
    placed, and the search waited on the candidates queued on them forever."""
    from recnas.errors import ConfigError

    proxy = TrainConfig(batch_size=64, max_steps=3, eval_every=0, device="cpu")
    with pytest.raises(ConfigError, match="ray_workers 4 exceeds the 2 CPUs of the local Ray instance.*at most 2"):
        RayExecutor(get_space("full-tiny"), tiny_store.dir, proxy, None, workers=4)


def test_relative_paths_reach_actors_working_in_another_folder(tiny_store, tmp_path, ray_local, monkeypatch):
    """The actors open the store and the supernet by the paths the job gives, which are relative
    under the default `--out runs/search`; actors work in their cluster's folder (here the one
    the test started Ray in), so every candidate failed with "checkpoint not found" unless the
    cluster had been started in the job's folder."""
    space = get_space("full-tiny")
    cfg = TrainConfig(batch_size=64, max_steps=2, eval_every=0, device="cpu")
    Trainer(Supernet(space, tiny_store.meta), cfg, tiny_store, out_dir=tmp_path / "sn", sampler=ArchSampler(space, seed=0), model_spec=supernet_spec(space, tiny_store.meta), progress=False).fit()
    finetune = TrainConfig(batch_size=64, max_steps=1, eval_every=0, restore_best=False, device="cpu")
    genos = [Genotype(random_architecture(np.random.default_rng(3), space))]
    expected = CandidateEvaluator(space, tiny_store, finetune, eval_rows=None, supernet=load_trained(tmp_path / "sn" / "model.pt")[0])(genos[0])["logloss"]
    monkeypatch.chdir(tmp_path)  # the job's folder, not the actors'
    ex = RayExecutor(space, tiny_store.dir.relative_to(tmp_path), finetune, None, supernet_path="sn/model.pt", workers=1)
    try:
        assert [m["logloss"] for m in ex(genos)] == pytest.approx([expected], rel=1e-5)
    finally:
        ex.shutdown()


def test_an_address_where_nothing_listens_is_refused_at_once(monkeypatch):
    """A mistyped `--ray-address` port: Ray's connect retries it 20 times, about 40 s each, so the
    job hung some 14 minutes (printing Ray's connection warnings) before it failed."""
    import socket

    from recnas.errors import ConfigError
    from recnas.search.executors import connect_ray

    with socket.socket() as s:  # a port nothing listens at once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray's slow connect was tried"))
    with pytest.raises(ConfigError, match=rf"cannot join the Ray cluster at 127.0.0.1:{port}: nothing answers there"):
        connect_ray(f"127.0.0.1:{port}")


def test_a_recnas_error_in_an_actor_reaches_the_user_as_itself_not_a_ray_traceback(tiny_store, tmp_path, ray_local):
    """An actor whose store or checkpoint is missing or corrupt on its node raised the DataError
    or CheckpointError in its constructor: the actor died and the job ended with Ray's
    ActorDiedError, some 40 lines of traceback, not the CLI's one `error:` line; one raised while
    scoring came as a RayTaskError whose message is the actor's traceback. Both now arrive as the
    RecnasError itself; any other failure still comes with Ray's details."""
    from types import SimpleNamespace

    from recnas.data.store import CTRStore
    from recnas.errors import CheckpointError, ConfigError, DataError

    space = get_space("full-tiny")
    proxy = TrainConfig(batch_size=64, max_steps=1, eval_every=0, device="cpu")
    genos = [Genotype(random_architecture(np.random.default_rng(0), space))]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    cases = [
        (DataError, "not a prepared recnas dataset", dict(data_dir=tmp_path / "missing-store"), genos),
        (CheckpointError, "corrupt or truncated checkpoint", dict(data_dir=tiny_store.dir, supernet_path=tmp_path / "bad.pt"), genos),
        (ConfigError, "architecture has 7 blocks, space 'full-tiny' has 3", dict(data_dir=tiny_store.dir), [Genotype(random_architecture(np.random.default_rng(0), get_space("full")))]),
    ]
    for cls, message, kwargs, candidates in cases:
        ex = RayExecutor(space, train_cfg=proxy, workers=1, **kwargs)
        try:
            with pytest.raises(cls, match=message) as info:
                ex(candidates)
        finally:
            ex.shutdown()
        assert type(info.value) is cls and "\n" not in str(info.value) and "ray::" not in str(info.value)
        with pytest.raises(cls) as serial:  # the serial executor's line for the same input, word for word
            path = kwargs.get("supernet_path")
            supernet = None if path is None else load_trained(path)[0]
            CandidateEvaluator(space, CTRStore(kwargs["data_dir"]), proxy, None, supernet=supernet)(candidates[0])
        assert str(info.value) == str(serial.value)

    ex = RayExecutor(space, tiny_store.dir, proxy, workers=1)  # not a RecnasError: a bug, kept with Ray's details
    try:
        with pytest.raises(ray.exceptions.RayTaskError, match="ray::_Worker.evaluate"):
            ex([SimpleNamespace(arch=genos[0].arch, hardware_json="{not json")])
    finally:
        ex.shutdown()


def test_a_pydantic_error_in_an_actor_is_a_ray_task_error_with_its_message_not_rays_own(tiny_store, ray_local):
    """A ValidationError raised while scoring (a bug: the driver sends what it validated): Ray
    2.11 makes it a RayTaskError(ValidationError) on the driver by calling ValidationError's
    `__new__` with the error alone, which needs its line errors, so the driver got Ray's own
    TypeError ("ValidationError.__new__() missing 1 required positional argument:
    'line_errors'") and not the error. It now leaves the actor as a ValueError with its message."""
    from types import SimpleNamespace

    proxy = TrainConfig(batch_size=64, max_steps=1, eval_every=0, device="cpu")
    arch = random_architecture(np.random.default_rng(0), get_space("full-tiny"))
    ex = RayExecutor(get_space("full-tiny"), tiny_store.dir, proxy, workers=1)
    try:
        with pytest.raises(ray.exceptions.RayTaskError, match="ray::_Worker.evaluate") as info:
            ex([SimpleNamespace(arch=arch, hardware_json="{not json")])
    finally:
        ex.shutdown()
    assert isinstance(info.value, ValueError) and type(info.value.cause) is ValueError
    assert str(info.value.cause).startswith("1 validation error for PIMConfig") and "json_invalid" in str(info.value.cause)
    assert "ValidationError: 1 validation error for PIMConfig" in str(info.value)  # the actor's traceback names it


def test_a_checkpoint_of_an_older_recnas_in_an_actor_is_the_serial_line_once(tiny_store, tmp_path, ray_local):
    """OlderRecnasCheckpoint appends its way on to the problem it is given, and unpickling gives
    it its whole message as the problem: on the driver, with any Ray, the hint came twice
    ("...; train the model again with this recnas; train the model again with this recnas").
    It now reaches the driver as a CheckpointError, the serial executor's line word for word."""
    from recnas.errors import CheckpointError
    from recnas.train.checkpoint import save_checkpoint

    space = get_space("full-tiny")
    state = Supernet(space, tiny_store.meta).state_dict()
    state.pop(next(iter(state)))  # weights of another layout: an older recnas's supernet
    save_checkpoint(tmp_path / "old.pt", {"model": state, "model_spec": supernet_spec(space, tiny_store.meta)})
    with pytest.raises(CheckpointError) as serial:
        load_trained(tmp_path / "old.pt")
    proxy = TrainConfig(batch_size=64, max_steps=1, eval_every=0, device="cpu")
    ex = RayExecutor(space, tiny_store.dir, proxy, supernet_path=tmp_path / "old.pt", workers=1)
    try:
        with pytest.raises(CheckpointError) as info:
            ex([Genotype(random_architecture(np.random.default_rng(0), space))])
    finally:
        ex.shutdown()
    assert str(info.value) == str(serial.value) and str(info.value).count("train the model again") == 1


def test_a_worker_that_cannot_start_is_one_line_naming_its_node(tiny_store, ray_local):
    """An actor whose constructor raised anything but a RecnasError (an ImportError on a node
    without recnas) died, and the job ended with Ray's ActorDiedError: some 40 lines of
    traceback. It is now one line: the node, the error's last line, what to check."""
    from types import SimpleNamespace

    from recnas.errors import WorkerStartError

    proxy = TrainConfig(batch_size=64, max_steps=1, eval_every=0, device="cpu")
    genos = [Genotype(random_architecture(np.random.default_rng(0), get_space("full-tiny")))]
    broken = SimpleNamespace(model_dump=lambda mode=None: {"no_such_field": 1})  # SearchSpace(**space) raises a pydantic error in the actor
    ex = RayExecutor(broken, tiny_store.dir, proxy, workers=1)
    try:
        with pytest.raises(WorkerStartError) as info:
            ex(genos)
    finally:
        ex.shutdown()
    message = str(info.value)
    assert message.startswith("a Ray worker could not start on node ") and ": pydantic_core._pydantic_core.ValidationError: 1 validation error for SearchSpace;" in message
    assert "\n" not in message and "\x1b" not in message and "Traceback" not in message and "every node needs recnas" in message


def test_worker_start_error_keeps_the_last_line_of_rays_report():
    from recnas.search.executors import worker_start_error

    report = (
        "The actor died because of an error raised in its creation task, \x1b[36mray::_Worker.__init__()\x1b[39m (pid=1, ip=10.1.2.3, actor_id=ab)\n"
        "           ^^^^^^^^^^^^\n  File \"x.py\", line 5, in __init__\nModuleNotFoundError: No module named 'recnas'\n  see https://example.org\n\n"
    )
    assert str(worker_start_error(report)) == (
        "a Ray worker could not start on node 10.1.2.3: ModuleNotFoundError: No module named 'recnas'; "
        "every node needs recnas and its dependencies installed, at the versions of this machine"
    )
    assert str(worker_start_error("")).startswith("a Ray worker could not start on its node: unknown error")


def test_a_worker_on_a_gpu_machine_scores_with_tf32_as_the_job_does(tmp_path, monkeypatch):
    """The serial executor scores inside `run_job`, which runs CUDA matmuls as TF32; a Ray actor
    is a process of its own, and since the trainer scopes TF32 to its fit its evaluation of the
    fine-tuned candidate ran without it: other scores on a GPU than the serial executor's."""
    import torch

    from recnas.search.executors import _Worker

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        worker = _Worker({"name": "full-tiny"}, str(tmp_path / "no-store"), None, 10, None)
        assert worker.init_error is not None  # no store there: kept for `evaluate`, as on a node without it
        assert matmul.allow_tf32 and cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def test_only_a_host_and_port_is_probed_and_brackets_are_stripped(monkeypatch):
    """_check_reachable probes HOST:PORT alone (an IPv6 host without its brackets); a ray://
    address, `auto` or a name without a numeric port is left to Ray, untouched."""
    import socket

    from recnas.search.executors import _check_reachable

    probed = []

    class Conn:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda addr, timeout=None: probed.append(addr) or Conn())
    for address in ("ray://127.0.0.1:10001", "auto", "localhost:port", "localhost"):
        _check_reachable(address)
    assert probed == []
    _check_reachable("[::1]:6379")
    _check_reachable("10.0.0.2:6380")
    assert probed == [("::1", 6379), ("10.0.0.2", 6380)]


def test_as_many_workers_as_cluster_cpus_is_allowed(monkeypatch):
    """connect_ray: ray_workers equal to the cluster's CPUs fits (one CPU each); one more is refused."""
    from recnas.errors import ConfigError
    from recnas.search.executors import connect_ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    assert connect_ray(workers=4) is ray and connect_ray() is ray
    with pytest.raises(ConfigError, match="ray_workers 5 exceeds the 4 CPUs of the local Ray instance"):
        connect_ray(workers=5)


def test_worker_start_error_names_the_last_exception_line_even_when_coloured():
    """worker_start_error: of several exception lines (a chained error) the last one is named,
    and a line that Ray coloured (ANSI codes before the name) still counts as one."""
    from recnas.search.executors import worker_start_error

    report = "ValueError: the first\n\nDuring handling of the above exception, another exception occurred:\n\x1b[31mImportError: the last\x1b[0m\n"
    assert str(worker_start_error(report)).startswith("a Ray worker could not start on its node: ImportError: the last;")
