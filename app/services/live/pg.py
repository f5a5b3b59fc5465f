"""The prediction log on PostgreSQL, shared by every replica of the service.

The same tables as the SQLite log (prefixed `live_`, versioned in `live_schema` through
`app.pg.migrate`) and the same SQL: `db.py`'s seam hands `log.py` and `records.py` an adapter
that rewrites their `?` placeholders for psycopg. What differs is written here: the DDL (text
in byte order, `COLLATE "C"`, so that lists sort as SQLite sorts them), a scoring step's bulk
writes (one `unnest` statement per model, not one round trip per row: a step of 4096 ticks x 4
models stays a handful of statements), and a market's position, which never moves backwards.

Replicas: only one of them may score (else every step's work is done twice and positions race).
`claim_scorer` takes a session-level advisory lock on a connection kept for nothing else;
PostgreSQL releases it when that session ends, however the process ends (SIGKILL included),
and another replica's next claim takes it over. The others serve every read from these tables.

One connection carries the reads and writes (autocommit, a transaction per write); after it is
lost, the call that met the loss raises one of `errors` and the next call reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from app import pg
from app.database import redact
from app.services.live.db import Cursor, LogError, Sql
from app.services.live.log import PredictionLog, PredictionRow, Resolved

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

SCORER_LOCK = "tickcast-live-scorer"  # hashed by PostgreSQL into the advisory lock's key
STATEMENT_TIMEOUT_MS = (
    5_000  # for the scorer's liveness probe: a database that cannot answer in this is in trouble
)
TEXT = 'text COLLATE "C" NOT NULL'  # compared and sorted byte by byte, as SQLite does

PG_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE live_series (
            id bigserial PRIMARY KEY, exchange {TEXT}, symbol {TEXT}, model_id {TEXT},
            UNIQUE (exchange, symbol, model_id))""",
        """CREATE TABLE live_predictions (
            series_id bigint NOT NULL, time double precision NOT NULL, seq bigint NOT NULL,
            probability double precision NOT NULL, logit double precision NOT NULL,
            calibrator integer NOT NULL, role smallint NOT NULL, last_move smallint NOT NULL,
            outcome smallint, scored_at double precision NOT NULL, resolved_at double precision,
            PRIMARY KEY (series_id, time, seq))""",
        f"""CREATE TABLE live_positions (
            exchange {TEXT}, symbol {TEXT}, time double precision NOT NULL, seq bigint NOT NULL,
            PRIMARY KEY (exchange, symbol))""",
        """CREATE TABLE live_metrics (
            series_id bigint PRIMARY KEY, computed_at double precision NOT NULL, body text NOT NULL)""",
        f"""CREATE TABLE live_decisions (
            id bigserial PRIMARY KEY, at double precision NOT NULL, active_id {TEXT},
            challenger_id {TEXT}, decision text NOT NULL, body text NOT NULL)""",
        f"""CREATE TABLE live_challengers (
            model_id {TEXT} PRIMARY KEY, added_at double precision NOT NULL)""",
        f"""CREATE TABLE live_calibrators (
            model_id {TEXT}, version integer NOT NULL, kept smallint NOT NULL,
            fitted_at double precision NOT NULL, calibrator text NOT NULL, report text NOT NULL,
            PRIMARY KEY (model_id, version))""",
    ),
)

# A step's predictions are copied (binary COPY) into this session's staging table, then moved in
# one statement that skips rows already logged, as SQLite's INSERT OR IGNORE does.
_STAGED_COLUMNS = (
    ("series_id", "int8"),
    ("time", "float8"),
    ("seq", "int8"),
    ("probability", "float8"),
    ("logit", "float8"),
    ("calibrator", "int4"),
    ("role", "int2"),
    ("last_move", "int2"),
    ("outcome", "int2"),
    ("scored_at", "float8"),
    ("resolved_at", "float8"),
)
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS live_staged ("
    + ", ".join(f"{name} {kind}" for name, kind in _STAGED_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_COPY = "COPY live_staged FROM STDIN (FORMAT BINARY)"
_NAMES = ", ".join(name for name, _ in _STAGED_COLUMNS)
_MOVE = f"INSERT INTO live_predictions ({_NAMES}) SELECT {_NAMES} FROM live_staged ON CONFLICT DO NOTHING"
_RESOLVE = (
    "UPDATE live_predictions AS x SET outcome = u.o, resolved_at = ?"
    " FROM unnest(?::float8[], ?::int8[], ?::int2[]) AS u(t, q, o)"
    " WHERE x.series_id = ? AND x.time = u.t AND x.seq = u.q AND x.outcome IS NULL"
)


@lru_cache(maxsize=512)
def _dialect(sql: str) -> str:
    """The shared SQL in psycopg's spelling: `%s` placeholders, INSERT OR IGNORE as ON CONFLICT."""
    ignore = "INSERT OR IGNORE "
    if sql.startswith(ignore):
        sql = f"INSERT {sql[len(ignore) :]} ON CONFLICT DO NOTHING"
    return sql.replace("%", "%%").replace("?", "%s")


class PgSql:
    """A psycopg connection behind `db.Sql`."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return self._conn.execute(_dialect(sql), parameters)

    def copy_staged(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows into this session's live_staged table, in binary (no text to format and parse)."""
        with self._conn.cursor() as cur, cur.copy(_COPY) as copy:
            copy.set_types([kind for _, kind in _STAGED_COLUMNS])
            for row in rows:
                copy.write_row(row)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_dialect(sql), parameters)


class PgPredictionLog(PredictionLog):
    """The live tables in a PostgreSQL database; one connection shared by threads under one lock."""

    errors: tuple[type[Exception], ...] = (*pg.errors(), LogError)

    _SET_POSITION = (
        "INSERT INTO live_positions (exchange, symbol, time, seq) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (exchange, symbol) DO UPDATE SET time = excluded.time, seq = excluded.seq"
        # a step that outlived its scorer role (its lock connection lost mid-step) must not take
        # the position back behind what the new scorer has logged since
        " WHERE (live_positions.time, live_positions.seq) < (excluded.time, excluded.seq)"
    )

    def __init__(self, url: str) -> None:
        self.path = url
        self._lock = threading.RLock()
        self._series: dict[tuple[str, str, str], int] = {}
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._claim_lock = threading.Lock()
        self._holder: psycopg.Connection[Any] | None = None  # the scorer lock's session
        self._scorer: bool | None = None  # None: never asked (the first answer is logged)
        conn = self._connection()
        try:
            pg.migrate(conn, "live_schema", PG_MIGRATIONS, "prediction log")
        except pg.SchemaTooNew as e:
            conn.close()
            raise LogError(f"{redact(url)}: {e}") from None
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        """Close both connections: the scorer role, if held, is free for another replica at once."""
        with self._claim_lock, self._lock:
            self._closed = True
            if self._scorer and self._holder is not None:
                # now, rather than when the server has noticed the closed socket
                with contextlib.suppress(*pg.errors()):
                    self._holder.execute("SELECT pg_advisory_unlock_all()")
            for conn in (self._conn, self._holder):
                if conn is not None:
                    _close_quietly(conn)
            self._conn, self._holder, self._scorer = None, None, False

    # ------------------------------------------------------------ the seam

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise LogError("the prediction log is closed")
        if self._conn is None or self._conn.closed:
            if self._conn is not None:
                log.warning("prediction log: the connection to %s was lost; reconnecting", redact(self.path))
            conn = pg.connect(self.path, part="live", autocommit=True)
            try:
                conn.execute(_STAGE)  # a temporary table: each session needs its own
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @contextmanager
    def _begin(self) -> Iterator[Sql]:
        conn = self._connection()
        with conn.transaction():
            yield PgSql(conn)

    def _handle(self) -> Sql:
        return PgSql(self._connection())

    def _insert(self, db: Sql, rows: Iterable[PredictionRow]) -> None:
        assert isinstance(db, PgSql)  # _begin's
        db.copy_staged(rows)
        db.execute(_MOVE)

    def _resolve(self, db: Sql, sid: int, r: Resolved, now: float) -> None:
        if not len(r.time):
            return
        outcome = r.outcome.astype(np.int64).tolist()
        db.execute(_RESOLVE, (now, r.time.tolist(), r.seq.tolist(), outcome, sid))

    # ------------------------------------------------------------ the scorer role

    def claim_scorer(self) -> bool:
        """Whether this replica is (now) the one that scores: True while its lock session lives.
        A lost lock session is replaced and the lock tried again at once; a database that cannot
        be reached raises one of `errors`."""
        with self._claim_lock:
            if self._closed:
                return False
            if self._scorer and self._holder_alive():
                return True
            if self._holder is None or self._holder.closed:
                self._holder = pg.connect(self.path, part="live-scorer", autocommit=True)
                self._holder.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            row = self._holder.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (SCORER_LOCK,)).fetchone()
            got = bool(row is not None and row[0])
            if got != self._scorer:
                log.info("live scoring: this replica %s", "scores" if got else "leaves scoring to another")
            self._scorer = got
            return got

    def _holder_alive(self) -> bool:
        """The lock session still answers (so it still holds the lock); False, and the session
        dropped, when it does not: another replica may hold the role by now."""
        holder = self._holder
        try:
            if holder is not None and not holder.closed:
                holder.execute("SELECT 1")
                return True
        except pg.errors() as e:
            log.warning("live scoring: the scorer lock's connection failed (%s); scoring stops", e)
        if holder is not None:
            _close_quietly(holder)
        self._holder, self._scorer = None, False
        return False


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # closing a broken connection may complain; it is gone either way
        log.debug("closing a broken connection failed", exc_info=True)
