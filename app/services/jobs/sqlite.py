"""SqliteJobStore: training jobs in a `jobs` table, by default in the tick store's file.

One file is the embedded default's promise (one thing to back up), so the jobs
table sits beside the ticks, but it is this module's: its schema, its SQL and
its migrations. Its schema version lives in a table of its own (`jobs_schema`),
because `PRAGMA user_version` is the tick store's. Files written before the
job store had a schema of its own already hold the table (the tick store made
it, at its schema version 2): the first migration adopts it, rows and all.

The store has a connection of its own to the file, so job writes and tick
writes are two SQLite writers that take turns on the file's lock (the busy
timeout waits for the other) rather than one Python lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.market.storage import StoreError
from app.services.jobs.states import JobStatus
from app.services.jobs.store import COLUMNS, JobRecord, JobStore, JobStoreError, dumps, from_row, to_row
from app.sqlite_file import connect, immediate

# Entry i takes the jobs schema from version i to i + 1. Append, never edit: files in the wild
# are at every version ever released.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # spec/progress/result are JSON text. IF NOT EXISTS: a file from before this store had
        # a schema version holds the table already, made by the tick store with this very SQL.
        """CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY, status TEXT NOT NULL, spec TEXT NOT NULL, progress TEXT,
            result TEXT, error TEXT, created_at REAL NOT NULL, started_at REAL,
            finished_at REAL)""",
        "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at)",
        "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_STATUSES = frozenset(s.value for s in JobStatus)  # a row of any other status is not counted


class SqliteJobStore:
    """Job records in SQLite. One connection shared by threads, one lock around every call.

    Every call is one `BEGIN IMMEDIATE` transaction, reads included, as they always were: a
    read sees one state of the table, and a file another writer holds locked past the busy
    timeout is reported as unavailable (GET /jobs 503, tickcast_store_up 0), not read around.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = connect(self.path, synchronous="FULL")  # a recorded job survives power loss
        except sqlite3.Error as e:
            raise JobStoreError(str(e)) from e
        try:
            self._migrate()
        except sqlite3.Error as e:
            self._db.close()
            raise JobStoreError(str(e)) from e
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteJobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._transaction() as db:
            return _version(db)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; what sqlite3 raises comes out as JobStoreError."""
        try:
            with immediate(self._db, self._lock) as db:
                yield db
        except sqlite3.Error as e:
            raise JobStoreError(str(e)) from e

    def _migrate(self) -> None:
        with self._lock:  # a plain read: opening an up-to-date file takes no write lock
            if _version(self._db) == SCHEMA_VERSION:
                return
        with self._transaction() as db:
            version = _version(db)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has job store schema version {version}, but this tickcast "
                    f"knows versions up to {SCHEMA_VERSION}; upgrade tickcast to open it"
                )
            if version == SCHEMA_VERSION:
                return
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    db.execute(stmt)
            db.execute("CREATE TABLE IF NOT EXISTS jobs_schema (version INTEGER NOT NULL)")
            db.execute("DELETE FROM jobs_schema")
            db.execute("INSERT INTO jobs_schema (version) VALUES (?)", (SCHEMA_VERSION,))

    # ------------------------------------------------------------ writes

    def put(self, record: JobRecord) -> None:
        r = record
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO jobs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                to_row(r),
            )

    def put_progress(self, job_id: str, progress: dict[str, Any] | None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = ?",
                (dumps(progress), job_id, JobStatus.RUNNING.value),
            )

    # ------------------------------------------------------------ reads

    def get(self, job_id: str) -> JobRecord | None:
        with self._transaction() as db:
            row = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else from_row(row)

    def newest(self, limit: int) -> list[JobRecord]:
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (max(0, int(limit)),),
            ).fetchall()
        return [from_row(r) for r in rows]

    def unfinished(self) -> list[JobRecord]:
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE status IN (?, ?)",
                (JobStatus.QUEUED.value, JobStatus.RUNNING.value),
            ).fetchall()
        return [from_row(r) for r in rows]

    def by_ids(self, ids: Collection[str]) -> dict[str, JobRecord]:
        with self._transaction() as db:
            rows = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id IN ({_marks(ids)})", list(ids)).fetchall()
        return {r[0]: from_row(r) for r in rows}

    def counts(self, ids: Collection[str] = ()) -> tuple[dict[JobStatus, int], dict[str, JobStatus]]:
        with self._transaction() as db:
            per_status = db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
            stored = (
                db.execute(f"SELECT id, status FROM jobs WHERE id IN ({_marks(ids)})", list(ids)).fetchall()
                if ids
                else []
            )
        return (
            {JobStatus(s): int(n) for s, n in per_status if s in _STATUSES},
            {jid: JobStatus(s) for jid, s in stored if s in _STATUSES},
        )


def _version(db: sqlite3.Connection) -> int:
    """The jobs schema's version: 0 before this store ever opened the file."""
    q = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs_schema'"
    if db.execute(q).fetchone() is None:
        return 0
    row = db.execute("SELECT MAX(version) FROM jobs_schema").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _marks(ids: Collection[str]) -> str:
    return ", ".join("?" * len(ids))


if TYPE_CHECKING:  # mypy proves here that the SQLite store implements the seam
    _conforms: type[JobStore] = SqliteJobStore
