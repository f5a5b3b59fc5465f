"""A fresh PostgreSQL database per test run, dropped afterwards, for the tests that need the real
server (127.0.0.1:5432 with trust authentication here and in CI; TICKCAST_TEST_PG overrides the
admin URL). Where there is no server or no psycopg the tests that ask for one skip, saying why."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

ADMIN_URL = os.environ.get("TICKCAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as c:
            c.execute("SELECT 1")
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"no PostgreSQL at {ADMIN_URL} ({first}); set TICKCAST_TEST_PG to an admin URL"
    return None


def url_of(dbname: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


@contextmanager
def fresh_database(prefix: str = "tickcast_test") -> Iterator[str]:
    """A new empty database's URL; dropped (connections and all) when the block ends."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_of(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset(url: str) -> None:
    """Empty the database: every table of every tickcast part goes, as if it had just been created."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        c.execute("DROP SCHEMA public CASCADE")
        c.execute("CREATE SCHEMA public")
