"""PgJobStore: training jobs in PostgreSQL, the database every replica of the service shares.

It keeps the `JobStore` promises exactly as `SqliteJobStore` does, so the job
manager cannot tell them apart: spec, progress and result are JSON *text* (as
in SQLite: a loss that went NaN is stored as Python wrote it, where jsonb would
refuse it), times are seconds as floats, and "ties: last written first" comes
from a sequence every write draws from (SQLite's rowid, which a replace renews).

Two columns exist for the replicas (`shared`): `owner`, the replica that
inserted the job (the one that runs it; a later write by another replica never
changes it), and `cancel_requested_at`, a cancel another replica asked for.
Neither is part of a `JobRecord`: `put` never touches a cancel request.

One connection, one lock around every call, each call one transaction. A lost
connection is a `JobStoreError` for that call and the next one connects again,
so a database restart costs the calls made while it was down, nothing more.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from app import pg
from app.market.storage import StoreError
from app.services.jobs.states import JobStatus
from app.services.jobs.store import COLUMNS, JobRecord, JobStore, JobStoreError, dumps, from_row, to_row

if TYPE_CHECKING:
    import psycopg

# Entry i takes the jobs schema from version i to i + 1. Append, never edit: databases in the
# wild are at every version ever released.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE SEQUENCE jobs_written",
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY, status TEXT NOT NULL, spec TEXT NOT NULL, progress TEXT,
            result TEXT, error TEXT, created_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
            written BIGINT NOT NULL DEFAULT nextval('jobs_written'),
            owner TEXT, cancel_requested_at DOUBLE PRECISION)""",
        "CREATE INDEX jobs_created ON jobs (created_at, written)",
        "CREATE INDEX jobs_unfinished ON jobs (owner) WHERE status IN ('queued', 'running')",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
SCHEMA_TABLE = "jobs_schema"
STATEMENT_TIMEOUT_MS = 5000  # as SQLite's busy timeout: a held lock is "retry later", not a hang
UNFINISHED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
_STATUSES = frozenset(s.value for s in JobStatus)  # a row of any other status is not counted


class PgJobStore:
    """Job records in PostgreSQL. `owner` names the replica whose jobs this store inserts (a
    new random id when not given: one per job manager, see `shared`)."""

    def __init__(self, url: str, *, owner: str | None = None) -> None:
        self.url = url
        self.owner = owner if owner is not None else uuid.uuid4().hex
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        try:
            with self._lock:
                pg.migrate(self._connection(), SCHEMA_TABLE, MIGRATIONS, "job store")
        except pg.SchemaTooNew as e:
            self.close()
            raise StoreError(str(e)) from e
        except failures() as e:
            self.close()
            raise JobStoreError(message(e)) from e

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PgJobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._transaction() as db:
            row = db.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one (the last one was lost). Call it under the lock."""
        if self._closed:
            raise JobStoreError("the job store is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = open_connection(self.url, "jobs")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction under the lock; what says "cannot answer now" comes out as JobStoreError."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    yield conn
            except failures() as e:
                raise JobStoreError(message(e)) from e

    # ------------------------------------------------------------ writes

    def put(self, record: JobRecord) -> None:
        r = record
        with self._transaction() as db:
            db.execute(
                f"""INSERT INTO jobs ({COLUMNS}, owner) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, spec = EXCLUDED.spec,
                    progress = EXCLUDED.progress, result = EXCLUDED.result, error = EXCLUDED.error,
                    created_at = EXCLUDED.created_at, started_at = EXCLUDED.started_at,
                    finished_at = EXCLUDED.finished_at, written = nextval('jobs_written')""",
                (*to_row(r), self.owner),
            )

    def put_progress(self, job_id: str, progress: dict[str, Any] | None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET progress = %s WHERE id = %s AND status = %s",
                (dumps(progress), job_id, JobStatus.RUNNING.value),
            )

    # ------------------------------------------------------------ reads

    def get(self, job_id: str) -> JobRecord | None:
        with self._transaction() as db:
            row = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return None if row is None else from_row(row)

    def newest(self, limit: int) -> list[JobRecord]:
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM jobs ORDER BY created_at DESC, written DESC LIMIT %s",
                (max(0, int(limit)),),
            ).fetchall()
        return [from_row(r) for r in rows]

    def unfinished(self) -> list[JobRecord]:
        with self._transaction() as db:
            rows = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE status IN (%s, %s)", UNFINISHED).fetchall()
        return [from_row(r) for r in rows]

    def by_ids(self, ids: Collection[str]) -> dict[str, JobRecord]:
        if not ids:
            return {}
        with self._transaction() as db:
            rows = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ANY(%s)", (list(ids),)).fetchall()
        return {r[0]: from_row(r) for r in rows}

    def counts(self, ids: Collection[str] = ()) -> tuple[dict[JobStatus, int], dict[str, JobStatus]]:
        with self._transaction() as db:  # one transaction: both reads see the same table
            per_status = db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
            stored = (
                db.execute("SELECT id, status FROM jobs WHERE id = ANY(%s)", (list(ids),)).fetchall()
                if ids
                else []
            )
        return (
            {JobStatus(s): int(n) for s, n in per_status if s in _STATUSES},
            {jid: JobStatus(s) for jid, s in stored if s in _STATUSES},
        )


def open_connection(url: str, part: str) -> psycopg.Connection[Any]:
    """An autocommit connection (each call makes its own transaction) whose statements give up
    after `STATEMENT_TIMEOUT_MS`, for the job store and the replicas' own queries."""
    conn = pg.connect(url, part=part, autocommit=True)
    try:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    except BaseException:
        conn.close()
        raise
    return conn


def failures() -> tuple[type[Exception], ...]:
    """What PostgreSQL raises when it cannot answer now: `app.pg.errors()`, and a database that
    only reads (a standby, default_transaction_read_only), as SQLite's read-only file."""
    return (*pg.errors(), pg.driver().errors.ReadOnlySqlTransaction)


def message(e: BaseException) -> str:
    """The error's first line: psycopg adds hints on further lines. Connection errors come from
    `app.pg.connect`, which already names the database without its password."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


if TYPE_CHECKING:  # mypy proves here that the PostgreSQL store implements the seam
    _conforms: type[JobStore] = PgJobStore
