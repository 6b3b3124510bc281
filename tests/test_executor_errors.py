"""What a Ray worker sends the driver when scoring fails, checked without Ray (so on any Ray
version, or none): Ray pickles the exception in the worker and unpickles it on the driver, and
Ray 2.11 then makes a `RayTaskError(ItsClass)` by calling its class's `__new__` with it alone.
With Ray 2.11 a pydantic ValidationError failed there, and the driver got Ray's TypeError
("ValidationError.__new__() missing 1 required positional argument: 'line_errors'") instead of
it; an OlderRecnasCheckpoint came back with its hint twice on any Ray."""

import pickle

import numpy as np
import pytest

from recnas.errors import CheckpointError, ConfigError, DataError
from recnas.search.executors import _Worker
from recnas.space import get_space
from recnas.space.samplers import random_architecture


def _worker(init_error=None, evaluator=None) -> _Worker:
    """A _Worker as Ray's actor holds it, without a store or a supernet to build it from."""
    worker = _Worker.__new__(_Worker)
    worker.init_error, worker.evaluator = init_error, evaluator
    return worker


def _arch_json() -> str:
    return random_architecture(np.random.default_rng(0), get_space("full-tiny")).to_json()


def _sent(worker: _Worker, hardware_json: str | None = None) -> Exception:
    with pytest.raises(Exception) as info:
        worker.evaluate(_arch_json(), hardware_json)
    return info.value


def _as_ray_delivers(exc: Exception) -> Exception:
    """`exc` as the driver gets it: unpickled, and made into Ray 2.11's RayTaskError(ItsClass)."""
    again = pickle.loads(pickle.dumps(exc))
    type(exc).__new__(type(exc), exc)
    return again


def test_a_pydantic_error_in_a_worker_reaches_the_driver_with_its_message():
    from pydantic import ValidationError

    from recnas.hardware import PIMConfig

    with pytest.raises(ValidationError) as raised:
        PIMConfig.model_validate_json("{not json")
    sent = _sent(_worker(evaluator=lambda g: pytest.fail("scored a candidate whose hardware did not parse")), "{not json")
    got = _as_ray_delivers(sent)
    assert type(got) is ValueError and str(got) == str(raised.value)  # a ValidationError is a ValueError: a bug, not a user error
    assert isinstance(sent.__cause__, ValidationError)  # the worker's traceback, which Ray carries as text, names it


def test_an_older_recnas_checkpoint_in_a_worker_reaches_the_driver_as_the_serial_line():
    from recnas.train.checkpoint import OtherLayoutCheckpoint

    error = OtherLayoutCheckpoint("sn/model.pt: the checkpoint's weights do not fit the model its model_spec describes (missing keys x)")
    got = _as_ray_delivers(_sent(_worker(init_error=error)))
    assert type(got) is CheckpointError and str(got) == str(error)  # its hint once, as the serial executor prints it


def test_errors_that_ray_rebuilds_leave_the_worker_as_themselves():
    from recnas.search.executors import portable_error

    for error in (ConfigError("architecture has 7 blocks, space 'full-tiny' has 3"), RuntimeError("CUDA out of memory"), KeyError("x")):

        def raise_it(genotype, error=error):
            raise error

        assert _sent(_worker(evaluator=raise_it)) is error
        assert portable_error(error) is error
    got = _as_ray_delivers(_sent(_worker(init_error=DataError("/data/x: not a prepared recnas dataset"))))
    assert type(got) is DataError and str(got) == "/data/x: not a prepared recnas dataset"


def test_a_recnas_error_with_more_arguments_than_its_message_keeps_its_message():
    from recnas.search.executors import portable_error
    from recnas.train.resume import ChangedRecipe, PastRequestedSteps

    for error in (ChangedRecipe("run/checkpoint.pt: cannot resume with a changed config (lr)", "run/checkpoint.pt", "lr"), PastRequestedSteps("run/checkpoint.pt", 10, 5)):
        with pytest.raises(TypeError):
            pickle.loads(pickle.dumps(error))  # why: unpickling calls the class with its message alone
        got = _as_ray_delivers(portable_error(error))
        assert type(got) is CheckpointError and str(got) == str(error)
