"""The job store's seam: what the job manager asks of wherever job records are kept.

Training jobs are the services' own data, so their store belongs here, not to
the tick store: `SqliteJobStore` (`jobs.sqlite`) keeps them in a table of the
tick store's SQLite file by default, and a PostgreSQL store is a second class
that satisfies `JobStore`, with nothing in the job manager changed.

A backend only stores and reads records. Everything a flaky store needs on top
(the truth held in memory, writes retried until they land, `StoreUnavailable`
for the HTTP edge) is `records.JobTable`'s, the same for every backend.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from app.services.jobs.states import JobStatus


@dataclass
class JobRecord:
    """One training job as it is shown and stored; spec, progress and result are JSON-able."""

    id: str
    status: JobStatus
    spec: dict[str, Any]
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


# The columns of a job's row, in this order, on every backend: spec, progress and result as JSON
# text (PostgreSQL's jsonb would refuse a NaN loss and turn 1e300 into an integer).
COLUMNS = "id, status, spec, progress, result, error, created_at, started_at, finished_at"


def to_row(r: JobRecord) -> tuple[Any, ...]:
    """The record as the values of COLUMNS."""
    return (
        r.id,
        str(r.status),
        json.dumps(r.spec),
        dumps(r.progress),
        dumps(r.result),
        r.error,
        r.created_at,
        r.started_at,
        r.finished_at,
    )


def from_row(row: tuple[Any, ...]) -> JobRecord:
    """The record of a row whose first values are COLUMNS (a backend may select more after them)."""
    jid, status, spec, progress, result, error, created, started, finished = row[:9]
    return JobRecord(
        jid,
        JobStatus(status),
        json.loads(spec),
        progress and json.loads(progress),
        result and json.loads(result),
        error,
        created,
        started,
        finished,
    )


def dumps(v: Any) -> str | None:
    return None if v is None else json.dumps(v)


class JobStoreError(RuntimeError):
    """The job store cannot read or write right now (locked, read-only, a failing disk, a lost
    connection); nothing was changed. The message is the backend's own."""


class JobStore(Protocol):
    """Job records by id. Safe to share between threads; every call is atomic. `JobStoreError`
    says the backend cannot answer now; anything else it raises is a bug."""

    def put(self, record: JobRecord) -> None:
        """Insert the record, or replace every field of the stored one."""
        ...

    def put_progress(self, job_id: str, progress: dict[str, Any] | None) -> None:
        """Replace the progress of a job stored as `running`; never touches a finished one."""
        ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def newest(self, limit: int) -> list[JobRecord]:
        """The newest `limit` records by `created_at`, newest first (ties: last written first)."""
        ...

    def unfinished(self) -> list[JobRecord]:
        """The records stored as `queued` or `running`."""
        ...

    def by_ids(self, ids: Collection[str]) -> dict[str, JobRecord]:
        """The stored records among `ids`, by id."""
        ...

    def counts(self, ids: Collection[str] = ()) -> tuple[dict[JobStatus, int], dict[str, JobStatus]]:
        """Stored records per status, and the stored status of those of `ids` it has, read
        together: the caller recounts the records whose stored status is out of date."""
        ...

    def close(self) -> None: ...
