"""The one place that picks a job store class for a store target (`app.database`)."""

from __future__ import annotations

from app.database import is_postgres
from app.services.jobs.sqlite import SqliteJobStore
from app.services.jobs.store import JobStore


def open_job_store(target: str) -> JobStore:
    if is_postgres(target):
        from app.services.jobs.pg import PgJobStore  # psycopg only for a postgresql:// target

        return PgJobStore(target)
    return SqliteJobStore(target)
