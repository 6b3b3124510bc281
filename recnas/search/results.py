"""SQLite results store: every evaluated candidate, so a search resumes without re-evaluating
and can be queried afterwards (`recnas search show`).

Why SQLite: one file, transactional (a crash never leaves half a row), stdlib, and queryable
with any SQL tool. Each result is committed as soon as it is computed.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from recnas.errors import DataError
from recnas.search.ranking import nan_last

SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    key TEXT PRIMARY KEY,
    arch TEXT NOT NULL,
    hardware TEXT,
    metrics TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS generations (
    run TEXT NOT NULL,
    generation INTEGER NOT NULL,
    best_key TEXT NOT NULL,
    best_score REAL NOT NULL,
    mean_score REAL NOT NULL,
    evaluated INTEGER NOT NULL,
    PRIMARY KEY (run, generation)
);
"""
# the columns of SCHEMA that are read and written: a table of one of these names in another
# application's database (which CREATE TABLE IF NOT EXISTS leaves as it is) must have them all
COLUMNS = {
    "candidates": ("key", "arch", "hardware", "metrics", "created"),
    "generations": ("run", "generation", "best_key", "best_score", "mean_score", "evaluated"),
}


class ResultsStore:
    """A search's SQLite database of evaluated candidates (a run's `search.sqlite`): their
    architecture, PIM configuration and metrics by key, and the progress of each generation.

    `read_only` (for `recnas search show`, and for reading a finished run's results): the file
    is opened read-only and must already be a recnas results database; otherwise the file (and
    its folder) is created if missing, with the schema, as a search does. A damaged file (bad
    pages past the header) is refused on opening: SQLite would only fail on the first query
    that reads a bad page, midway through a search, with a traceback."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        try:
            if read_only:
                self._open_read_only()
                tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "candidates" not in tables:
                    raise DataError(f"{self.path}: not a recnas results database (it has no candidates table)")
                self._check_columns()
                self._check_no_code()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path)
                self._check_intact()
                self._check_columns()
                self._check_no_code()
                self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            # as `_check_intact` says it: a search stopped here with no way on
            hint = "" if read_only else "; move it away to score the candidates afresh"
            raise DataError(f"{self.path}: not a readable recnas results database ({exc}){hint}") from None

    def _open_read_only(self, recover: bool = True) -> None:
        """A read-only connection, checked intact. A search hard-killed mid-write (SIGKILL, the
        OOM killer) leaves a hot journal that only a writable connection rolls back: `search
        show` said "not a readable recnas results database (attempt to write a readonly
        database)" of a sound file until the search ran again. It is rolled back as that search
        would (SQLite does so only where no live writer holds the file), adding nothing."""
        self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            self._check_intact()
            return
        except sqlite3.OperationalError as exc:
            self.db.close()
            if exc.sqlite_errorcode != sqlite3.SQLITE_READONLY_ROLLBACK or not recover:
                raise
        try:
            with contextlib.closing(sqlite3.connect(self.path)) as writable:
                writable.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the read that rolls it back
        except sqlite3.Error as exc:
            raise DataError(f"{self.path}: holds the unfinished write of a hard-killed search ({self.path.name}-journal), which only a writable "
                            f"connection can undo ({exc}); run the search again, or make the file and its folder writable") from None
        self._open_read_only(recover=False)

    def _check_intact(self) -> None:
        (status,) = self.db.execute("PRAGMA quick_check(1)").fetchone()
        if status != "ok":
            raise DataError(f"{self.path}: damaged results database ({status.splitlines()[-1]}); move it away to score the candidates afresh")

    def _check_columns(self) -> None:
        """Refuse a database whose tables of our names lack our columns (another application's,
        or an edited one): the first query would fail on them, a traceback midway through."""
        for table, columns in COLUMNS.items():
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in columns if c not in have]
            if have and missing:
                raise DataError(f"{self.path}: not a recnas results database (its {table} table has no column {', '.join(missing)})")

    def _check_no_code(self) -> None:
        """Refuse a database holding triggers or views, which recnas never writes: a trigger of
        another application's (or a hostile) file runs its own SQL at every candidate stored,
        e.g. a recursive query that hangs a resumed search, or writes rows of its own."""
        code = self.db.execute("SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view') ORDER BY type, name LIMIT 3").fetchall()
        if code:
            what = ", ".join(f"{kind} {name!r}" for kind, name in code)
            raise DataError(f"{self.path}: not a recnas results database (it holds {what}, which recnas never writes); move it away to score the candidates afresh")

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A transaction; SQLite failing to write it (a full disk, a file size limit: "disk I/O
        error"; a read-only file or folder) is a DataError naming the database, not a traceback
        midway through a search. The transaction is rolled back: every candidate committed
        before it is kept, and a re-run goes on from them."""
        try:
            with self.db:
                yield
        except sqlite3.Error as exc:
            raise DataError(f"{self.path}: cannot write the results database ({exc}); the candidates stored before are kept: run the command again once it can be written") from None

    # -- candidates -------------------------------------------------------------------
    def get(self, key: str) -> dict | None:
        """The stored metrics of candidate `key` (its genotype key), None when it has none."""
        row = self.db.execute("SELECT metrics FROM candidates WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._metrics(key, row[0])

    def put(self, key: str, arch_json: str, metrics: dict, hardware_json: str | None = None) -> None:
        """Store (or replace) candidate `key` with its architecture and PIM configuration as
        JSON and its metrics; committed at once."""
        with self._writing():
            self.db.execute(
                "INSERT OR REPLACE INTO candidates (key, arch, hardware, metrics, created) VALUES (?, ?, ?, ?, ?)",
                (key, arch_json, hardware_json, json.dumps(metrics), time.time()),
            )

    def design(self, key: str):
        """(Architecture, PIMConfig or None) of a stored candidate. A row whose text does not
        parse (the database was edited, or damaged inside a row, which `quick_check` cannot see)
        is a DataError naming the database, not a validation traceback mid-job."""
        from pydantic import ValidationError

        from recnas.hardware import PIMConfig
        from recnas.space.arch import Architecture

        row = self.db.execute("SELECT arch, hardware FROM candidates WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise DataError(f"{self.path}: no candidate {key!r}")
        try:
            return Architecture.model_validate_json(row[0]), None if row[1] is None else PIMConfig.model_validate_json(row[1])
        except (ValidationError, TypeError, ValueError):
            raise DataError(f"{self.path}: candidate {key!r} has no readable architecture or PIM configuration; the database was edited or is damaged") from None

    def all(self) -> list[dict]:
        """Every candidate in the order they were stored: key, arch and hardware (JSON text) and
        its metrics (logloss, auc, costs)."""
        rows = self.db.execute("SELECT key, arch, hardware, metrics FROM candidates ORDER BY created").fetchall()
        return [{"key": k, "arch": a, "hardware": h, **self._metrics(k, m)} for k, a, h, m in rows]

    def by_logloss(self) -> list[dict]:
        """Every candidate, lowest search log loss first; a NaN one (a subnet whose inherited
        weights give NaN logits) last: compared as a number, it stops a sort midway."""
        return sorted(self.all(), key=lambda r: nan_last(r["logloss"]))

    def _metrics(self, key: str, text: str) -> dict:
        """A stored candidate's metrics; a row edited or written by something else is a DataError."""
        try:
            metrics = json.loads(text)
        except (TypeError, ValueError):
            metrics = None
        if not isinstance(metrics, dict) or not isinstance(metrics.get("logloss"), (int, float)):
            raise DataError(f"{self.path}: candidate {key!r} has no readable metrics (log loss); the database was edited or is not recnas's")
        return metrics

    def __len__(self) -> int:
        """The number of stored candidates."""
        return self.db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]

    # -- progress ---------------------------------------------------------------------
    def log_generation(self, run: str, generation: int, best_key: str, best_score: float, mean_score: float, evaluated: int) -> None:
        """Record (or replace) one generation of the search named `run`."""
        with self._writing():
            self.db.execute(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?)",
                (run, generation, best_key, best_score, mean_score, evaluated),
            )

    def clear_generations(self, run: str) -> None:
        """Forget `run`'s logged generations: a search replays (and logs) every generation from 0."""
        with self._writing():
            self.db.execute("DELETE FROM generations WHERE run = ?", (run,))

    def generations(self, run: str) -> list[dict]:
        """The logged generations of the search named `run` (a job's is "search"), in order."""
        rows = self.db.execute(
            "SELECT generation, best_key, best_score, mean_score, evaluated FROM generations WHERE run = ? ORDER BY generation", (run,)
        ).fetchall()
        return [dict(zip(("generation", "best_key", "best_score", "mean_score", "evaluated"), r)) for r in rows]

