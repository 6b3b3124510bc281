"""What the scripts in benchmarks/ share: their entry point. A user error there (an unknown
budget, a missing store, a bad config) is one line and exit code 2, as in the CLI
(`recnas.cli.main`), never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from recnas.errors import RecnasError


def run_script(main: Callable[[], object]) -> None:
    """Run a benchmark script's `main`; a `RecnasError` is printed as `error: ...` on stderr
    and the process exits with code 2."""
    try:
        main()
    except RecnasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
