"""The live-evaluation tables' home: one SQLite connection to the tick store's file, their schema and
its migrations (a version of their own in `live_schema`, as the job store keeps its own), and the
(market, model) series every row is filed under.

The SQL of the live tables is written once, for both backends, with `?` placeholders, against
`Sql` (what `sqlite3.Connection` already is); the PostgreSQL log (`pg.py`) hands the same code an
adapter to its connection and keeps its own DDL. A backend supplies `_begin` (one write
transaction) and `_handle` (the connection for a read), both called under `_lock`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from app.market.storage import StoreError
from app.sqlite_file import connect, immediate

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE live_series (
            id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, symbol TEXT NOT NULL,
            model_id TEXT NOT NULL, UNIQUE (exchange, symbol, model_id))""",
        # role 1: the active model when it scored, 0: a shadow; last_move: the sign of the
        # price change into the tick (the last-move rule's forecast, scored beside the model)
        """CREATE TABLE live_predictions (
            series_id INTEGER NOT NULL, time REAL NOT NULL, seq INTEGER NOT NULL,
            probability REAL NOT NULL, logit REAL NOT NULL, calibrator INTEGER NOT NULL,
            role INTEGER NOT NULL, last_move INTEGER NOT NULL, outcome INTEGER,
            scored_at REAL NOT NULL, resolved_at REAL,
            PRIMARY KEY (series_id, time, seq)) WITHOUT ROWID""",
        """CREATE TABLE live_positions (
            exchange TEXT NOT NULL, symbol TEXT NOT NULL, time REAL NOT NULL, seq INTEGER NOT NULL,
            PRIMARY KEY (exchange, symbol))""",
        """CREATE TABLE live_metrics (
            series_id INTEGER PRIMARY KEY, computed_at REAL NOT NULL, body TEXT NOT NULL)""",
        """CREATE TABLE live_decisions (
            id INTEGER PRIMARY KEY, at REAL NOT NULL, active_id TEXT NOT NULL,
            challenger_id TEXT NOT NULL, decision TEXT NOT NULL, body TEXT NOT NULL)""",
        # models a job trained with activation if_better_live: shadows until live evidence promotes them
        """CREATE TABLE live_challengers (model_id TEXT PRIMARY KEY, added_at REAL NOT NULL)""",
        """CREATE TABLE live_calibrators (
            model_id TEXT NOT NULL, version INTEGER NOT NULL, kept INTEGER NOT NULL,
            fitted_at REAL NOT NULL, calibrator TEXT NOT NULL, report TEXT NOT NULL,
            PRIMARY KEY (model_id, version))""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
ROLES = ("shadow", "active")


class LogError(StoreError):
    """The prediction log cannot be read or written right now."""


class Cursor(Protocol):
    """What the live tables' code reads from a statement (a sqlite3 or psycopg cursor)."""

    @property
    def description(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Sql(Protocol):
    """The seam between the shared SQL (`?` placeholders) and a backend's connection."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object: ...


class LiveTables:
    """The connection, its lock and transactions, the migrations and the series ids."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error, LogError)

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        # NORMAL: with WAL a power cut may lose the last steps, never corrupt; a lost step is
        # scored again (the position moves with it)
        self._db = connect(self.path, synchronous="NORMAL")
        self._series: dict[tuple[str, str, str], int] = {}
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim_scorer(self) -> bool:
        """Whether this process may score (and refresh, promote, recalibrate): a SQLite file has one
        service, so always; PostgreSQL replicas take turns on a lock (`pg.py`)."""
        return True

    @contextmanager
    def _transaction(self) -> Iterator[Sql]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            try:
                with self._begin() as db:
                    yield db
            except BaseException:
                # a series created in the rolled-back transaction is gone: forget every cached id
                # rather than file later rows under one that no longer exists
                self._series.clear()
                raise

    @contextmanager
    def _reading(self) -> Iterator[Sql]:
        """The connection for a read, held under the lock."""
        with self._lock:
            yield self._handle()

    def _begin(self) -> AbstractContextManager[Sql]:
        return immediate(self._db, self._lock)

    def _handle(self) -> Sql:
        return self._db

    def _migrate(self) -> None:
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS live_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM live_schema").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise LogError(
                    f"{self.path} has prediction log schema version {version}, but this tickcast knows "
                    f"versions up to {SCHEMA_VERSION}; upgrade tickcast to open it"
                )
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    db.execute(stmt)
            db.execute("DELETE FROM live_schema")
            db.execute("INSERT INTO live_schema (version) VALUES (?)", (SCHEMA_VERSION,))

    def _series_id(self, db: Sql, exchange: str, symbol: str, model_id: str, *, create: bool) -> int | None:
        key = (exchange, symbol, model_id)
        sid = self._series.get(key)
        if sid is not None:
            return sid
        if create:
            db.execute("INSERT OR IGNORE INTO live_series (exchange, symbol, model_id) VALUES (?, ?, ?)", key)
        row = db.execute(
            "SELECT id FROM live_series WHERE exchange = ? AND symbol = ? AND model_id = ?", key
        ).fetchone()
        if row is None:
            return None
        self._series[key] = int(row[0])
        return int(row[0])
