"""User errors of `--nproc` ranks, handed to the launcher so it prints one line for them all.

Kept apart from recnas.train.distributed (which imports torch and the training package) so
that the CLI's error path stays light for every command that never trains.
"""

from __future__ import annotations

import os
from pathlib import Path

ERROR_DIR_ENV = "RECNAS_ERROR_DIR"  # set by recnas.train.distributed.launch for the ranks it starts


def launched_rank() -> bool:
    """Whether this process is one of the ranks that `launch` started (the launcher reports for them)."""
    return bool(os.environ.get(ERROR_DIR_ENV)) and int(os.environ.get("WORLD_SIZE", "1")) > 1


OUT_OF_MEMORY = "out of memory"  # a report's kind that the launcher raises as a MemoryError (exit 1, not 2)


def report_error(message: str, kind: str = "error") -> bool:
    """Under `launch`, hand this rank's message to the launcher (which prints it once) and
    return True: the rank should then exit quietly. False outside `launch`: print it. `kind` is
    "error" (a user error, exit 2) or OUT_OF_MEMORY (exit 1): an out-of-memory line, printed by
    the ranks, came once per rank and then torchrun's ChildFailedError traceback."""
    if not launched_rank():
        return False
    _report_file().write_text(f"{kind}\n{message}", encoding="utf-8")
    return True


def _report_file() -> Path:
    """This rank's report in the launcher's error folder (`first_error` reads them by rank)."""
    return Path(os.environ[ERROR_DIR_ENV]) / f"rank{os.environ.get('RANK', '0')}"


def reported_by_another_rank() -> bool:
    """Whether another rank of this `launch` has handed in its error. Its exit closes its gloo
    connections, so a rank waiting for it in a collective then fails with "Connection closed by
    peer": that rank's traceback said nothing the reported line does not, and came before it
    (rank 0 alone writes the run's files, so an error writing them is rank 0's alone)."""
    if not launched_rank():
        return False
    mine = _report_file()
    return any(f != mine for f in mine.parent.glob("rank*"))


def first_error(folder: Path) -> tuple[str, str] | None:
    """(kind, message) of the lowest rank that reported one (ranks usually fail alike)."""
    reports = sorted(folder.glob("rank*"), key=lambda f: int(f.name[4:]))
    if not reports:
        return None
    kind, _, message = reports[0].read_text(encoding="utf-8").partition("\n")
    return kind, message
