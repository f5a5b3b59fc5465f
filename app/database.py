"""Where shared state lives, from `TICKCAST_DATABASE_URL`: one SQLite file (the embedded default)
or a PostgreSQL database that several replicas and training workers share.

Everything that opens a store takes a *target*: a SQLite file path (or ':memory:') or a
postgresql:// URL. A target is what a store's `path` gives back and what a worker process opens
again, so a worker needs no settings of its own. psycopg is imported only for a PostgreSQL
target (`app.pg`), never for the default.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite://"


class DatabaseUrlError(ValueError):
    """The database URL names no backend tickcast has."""


def is_postgres(target: str | Path) -> bool:
    return str(target).startswith(POSTGRES_SCHEMES)


def target(database_url: str | None, store_path: str | Path) -> str:
    """The store target for these settings: the URL's file for sqlite:///path (sqlite:///:memory:
    for an in-memory store), the URL itself for postgresql://, `store_path` when no URL is set."""
    if database_url is None or database_url == "":
        return str(store_path)
    if is_postgres(database_url):
        return database_url
    if database_url.startswith(SQLITE_SCHEME):
        rest = database_url[len(SQLITE_SCHEME) :]
        # sqlite:///relative/file, sqlite:////absolute/file (SQLAlchemy's spelling)
        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise DatabaseUrlError(f"{redact(database_url)} names no file: use sqlite:///path/to/file.db")
        return path
    raise DatabaseUrlError(
        f"{redact(database_url)} is no database tickcast knows: use sqlite:///path or "
        "postgresql://user@host:5432/dbname"
    )


def redact(url: str) -> str:
    """The URL with its password replaced, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
