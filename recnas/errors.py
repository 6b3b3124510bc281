"""User-facing errors: the CLI prints these as one clear message, never a traceback."""

from collections.abc import Iterator


class RecnasError(Exception):
    """Base class for errors caused by user input (files, configs, checkpoints)."""


class DataError(RecnasError):
    """Raw or prepared data is missing, malformed or inconsistent."""


class ConfigError(RecnasError):
    """A YAML/JSON config or architecture is invalid."""


class TrainingDiverged(RecnasError):
    """Training reached a non-finite loss. Its own class so that a caller which can carry on
    without that one model (a rank study's from-scratch runs) catches only this."""


class CheckpointError(RecnasError):
    """A checkpoint is corrupt or does not match the model it is loaded into."""


class WorkerStartError(RecnasError):
    """A Ray worker could not start on its node (recnas or a dependency missing or of another
    version there): the cluster's setup, which the user fixes, not a recnas bug."""


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, then the exception it was raised from or while handling, and so on (as a
    traceback shows them), each once: what a caller looks through for the cause it recognises
    (a Ctrl-C under torch's writer error, a missing compiler under torch.compile's)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
