"""TickStore: every market's trade ticks in one SQLite file.

SQLite because a fresh machine needs nothing installed and one file is easy
to back up; the schema is small and plain so a PostgreSQL store can mirror it
when several replicas share data (`storage.TickStorage` is the seam both
implement). The file holds ticks, markets and ingestion cursors, nothing else
of this class's: training jobs keep their own table in it, with its own
schema and migrations (`app.services.jobs.sqlite`).

Ticks live in a WITHOUT ROWID table clustered on (market_id, time, seq), so a
time-range read of one market is one sequential walk of the b-tree. What
bounds reads then is the sqlite3 module turning each row into Python objects
(~0.5 us per row here), which is why reads skip columns nobody needs.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.market import coverage, sqlite_gaps
from app.market.coverage import Coverage
from app.market.sqlite_rows import (
    AFTER_DTYPE,
    any_known,
    columns,
    opt_str_col,
    ord_col,
    time_range,
    to_arrays,
)
from app.market.sqlite_rows import Market as _Market
from app.market.storage import Position, StoreError, TickStorage
from app.market.ticks import TickArrays, ordinals, validate
from app.sqlite_file import connect, immediate

__all__ = ["DEFAULT_PATH", "SCHEMA_VERSION", "Position", "StoreError", "TickStore"]

DEFAULT_PATH = Path("data/tickcast.db")

# Entry i takes a file from user_version i to i + 1. Append, never edit:
# files in the wild are at every version ever released.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # has_trade_id/has_side: reads skip columns a market never had, as
        # fetching a column of NULLs still costs a third of a read.
        """CREATE TABLE markets (
            id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, symbol TEXT NOT NULL,
            next_seq INTEGER NOT NULL DEFAULT 0, has_trade_id INTEGER NOT NULL DEFAULT 0,
            has_side INTEGER NOT NULL DEFAULT 0, UNIQUE (exchange, symbol))""",
        # seq keeps arrival order among equal times across inserts; ord is a
        # tick's ordinal among identical (time, price, amount) rows of its
        # source (or, when the source gives none, of its batch), which tells two
        # real same-second trades apart from one trade delivered twice when the
        # exchange gives no id.
        """CREATE TABLE ticks (
            market_id INTEGER NOT NULL REFERENCES markets (id), time REAL NOT NULL,
            seq INTEGER NOT NULL, price REAL NOT NULL, amount REAL NOT NULL,
            trade_id TEXT, side TEXT, ord INTEGER,
            PRIMARY KEY (market_id, time, seq)) WITHOUT ROWID""",
        """CREATE UNIQUE INDEX ticks_trade_id ON ticks (market_id, trade_id)
            WHERE trade_id IS NOT NULL""",
        """CREATE UNIQUE INDEX ticks_no_id ON ticks (market_id, time, price, amount, ord)
            WHERE trade_id IS NULL""",
    ),
    # Created the training jobs' table until the job store took it over with schema versions
    # of its own (app/services/jobs/sqlite.py, which adopts the table these files hold). The
    # step stays, empty, so that version numbers keep their meaning.
    (),
    (
        # where each market's ingestion resumes; written in the same transaction as the ticks
        # it follows, so it never points past data that was not stored
        """CREATE TABLE cursors (
            market_id INTEGER PRIMARY KEY REFERENCES markets (id), cursor TEXT NOT NULL,
            updated_at REAL NOT NULL)""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class TickStore:
    """Idempotent tick storage keyed by market (`exchange`, `symbol`).

    One connection shared by threads (an asyncio app calls it from a thread
    pool); every call holds one lock, because a read on a shared connection
    would otherwise see another thread's half-written transaction.
    """

    # what sqlite3 raises when the file is locked, read-only, full or failing (`TickStorage.errors`)
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        # FULL: an acknowledged insert survives power loss, not just a crash; a bulk insert is
        # one transaction, so one fsync per commit is cheap.
        self._db = connect(self.path, synchronous="FULL")
        try:
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TickStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db, self._lock)

    def _migrate(self) -> None:
        with self._transaction() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has tick store schema version {version}, but this tickcast "
                    f"knows versions up to {SCHEMA_VERSION}; upgrade tickcast to open it"
                )
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    db.execute(stmt)
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def insert(self, exchange: str, symbol: str, ticks: TickArrays, *, cursor: str | None = None) -> int:
        """Store ticks, skipping ones already stored; returns how many were new.

        A tick without a trade id is known by (time, price, amount, ordinal): its
        `ticks.ordinal` when the source numbered it (the same trade then has the same
        key however the source was paged), else its number within this batch.
        Validation happens before the transaction opens, so bad input leaves
        the store exactly as it was. `cursor` (an ingestion source's resume
        point after these ticks) commits together with them or not at all.
        """
        validate(ticks)
        n = len(ticks)
        if n == 0 and cursor is None:
            return 0
        trade_id, no_id = opt_str_col(ticks.trade_id, n)
        side, no_side = opt_str_col(ticks.side, n)
        ords = ord_col(ordinals(ticks, no_id) if ticks.ordinal is None else ticks.ordinal, no_id)
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO markets (exchange, symbol) VALUES (?, ?)", (exchange, symbol))
            market_id, seq0 = db.execute(
                "SELECT id, next_seq FROM markets WHERE exchange = ? AND symbol = ?",
                (exchange, symbol),
            ).fetchone()
            db.execute(
                "UPDATE markets SET next_seq = next_seq + ?, has_trade_id = has_trade_id OR ?,"
                " has_side = has_side OR ? WHERE id = ?",
                (n, any_known(no_id), any_known(no_side), market_id),
            )
            if cursor is not None:
                db.execute(
                    "INSERT INTO cursors (market_id, cursor, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (market_id) DO UPDATE SET cursor = excluded.cursor,"
                    " updated_at = excluded.updated_at",
                    (market_id, cursor, time.time()),
                )
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO ticks"
                " (market_id, time, seq, price, amount, trade_id, side, ord)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                zip(
                    repeat(market_id),
                    ticks.time.tolist(),
                    range(seq0, seq0 + n),
                    ticks.price.tolist(),
                    ticks.amount.tolist(),
                    trade_id,
                    side,
                    ords,
                ),
            )
            return db.total_changes - before

    def cursor(self, exchange: str, symbol: str) -> str | None:
        """Where ingestion of this market resumes (None: never pulled)."""
        with self._lock:
            row = self._db.execute(
                "SELECT c.cursor FROM cursors c JOIN markets m ON m.id = c.market_id"
                " WHERE m.exchange = ? AND m.symbol = ?",
                (exchange, symbol),
            ).fetchone()
        return None if row is None else str(row[0])

    def read(
        self,
        exchange: str,
        symbol: str,
        start: float | None = None,
        end: float | None = None,
        limit: int | None = None,
        *,
        ids: bool = True,
    ) -> TickArrays:
        """Ticks with start <= time < end in time order (ties in arrival order), first `limit`.

        `ids=False` skips trade_id/side for callers that never look at them
        (features): every fetched column costs per-row Python work.
        """
        with self._lock:
            market = self._market(exchange, symbol)
            if market is None or (limit is not None and limit <= 0):
                return TickArrays.empty()
            cols, dtype = columns(market, ids)
            where, args = time_range(market[0], start, end)
            # Counting first (cheap: no row leaves SQLite) lets fromiter allocate once.
            n = self._db.execute(f"SELECT COUNT(*) FROM ticks WHERE {where}", args).fetchone()[0]
            n = n if limit is None else min(n, int(limit))
            cur = self._db.execute(
                f"SELECT {cols} FROM ticks WHERE {where} ORDER BY time, seq LIMIT ?", [*args, n]
            )
            return to_arrays(np.fromiter(cur, dtype=dtype, count=n))

    def latest(self, exchange: str, symbol: str, n: int, *, ids: bool = True) -> TickArrays:
        """The last n ticks, oldest first, as a model's input window wants them."""
        with self._lock:
            market = self._market(exchange, symbol)
            if market is None or n <= 0:
                return TickArrays.empty()
            cols, dtype = columns(market, ids)
            cur = self._db.execute(
                f"SELECT {cols} FROM ticks WHERE market_id = ? ORDER BY time DESC, seq DESC LIMIT ?",
                (market[0], int(n)),
            )
            return to_arrays(np.fromiter(cur, dtype=dtype)[::-1])

    def after(
        self, exchange: str, symbol: str, position: Position | None, limit: int, *, oldest: bool = False
    ) -> tuple[TickArrays, np.ndarray]:
        """The newest `limit` ticks past `position` (any, if None), oldest first, with their seqs;
        with `oldest`, the first `limit` past it instead (a reader that must miss nothing).

        A live view asks this over and over with the last (time, seq) it saw. Only ticks
        at or after that time count as new: a backfill of older history is not news, and
        the condition keeps the read a range walk of the primary key.
        """
        with self._lock:
            market = self._market(exchange, symbol)
            if market is None or limit <= 0:
                return TickArrays.empty(), np.empty(0, dtype=np.int64)
            where = "market_id = ?"
            args: list[float | int] = [market[0]]
            if position is not None:
                where += " AND time >= ? AND (time > ? OR seq > ?)"
                args += [float(position[0]), float(position[0]), int(position[1])]
            order = "time, seq" if oldest else "time DESC, seq DESC"
            cur = self._db.execute(
                f"SELECT time, price, amount, seq FROM ticks WHERE {where} ORDER BY {order} LIMIT ?",
                [*args, int(limit)],
            )
            rows = np.fromiter(cur, dtype=AFTER_DTYPE)
        rows = rows if oldest else rows[::-1]
        return to_arrays(rows), np.ascontiguousarray(rows["seq"])

    def before(self, exchange: str, symbol: str, position: Position, n: int) -> tuple[TickArrays, np.ndarray]:
        """The last n ticks at or before `position`, oldest first, with their seqs: the window a
        prediction logged at that position was made from."""
        with self._lock:
            market = self._market(exchange, symbol)
            if market is None or n <= 0:
                return TickArrays.empty(), np.empty(0, dtype=np.int64)
            cur = self._db.execute(
                "SELECT time, price, amount, seq FROM ticks WHERE market_id = ? AND time <= ?"
                " AND (time < ? OR seq <= ?) ORDER BY time DESC, seq DESC LIMIT ?",
                (market[0], float(position[0]), float(position[0]), int(position[1]), int(n)),
            )
            rows = np.fromiter(cur, dtype=AFTER_DTYPE)[::-1]
        return to_arrays(rows), np.ascontiguousarray(rows["seq"])

    def count(
        self,
        exchange: str,
        symbol: str,
        start: float | None = None,
        end: float | None = None,
        limit: int | None = None,
    ) -> int:
        """Ticks with start <= time < end (all by default); with `limit`, counting stops there, so
        "are there at least n?" costs n rows however big the market is."""
        with self._lock:
            market = self._market(exchange, symbol)
            if market is None:
                return 0
            where, args = time_range(market[0], start, end)
            q = f"SELECT COUNT(*) FROM ticks WHERE {where}"
            if limit is not None:
                q = f"SELECT COUNT(*) FROM (SELECT 1 FROM ticks WHERE {where} LIMIT ?)"
                args.append(int(limit))
            return int(self._db.execute(q, args).fetchone()[0])

    def time_range(self, exchange: str, symbol: str) -> tuple[float, float] | None:
        """(first, last) tick time, or None for a market with no ticks."""
        with self._lock:
            market = self._market(exchange, symbol)
            if market is None:
                return None
            # Two ORDER BY ... LIMIT 1 subqueries are two b-tree descents, where
            # MIN() and MAX() in one SELECT would scan the whole market.
            first, last = self._db.execute(
                "SELECT (SELECT time FROM ticks WHERE market_id = ?1 ORDER BY time LIMIT 1),"
                " (SELECT time FROM ticks WHERE market_id = ?1 ORDER BY time DESC LIMIT 1)",
                (market[0],),
            ).fetchone()
            return None if first is None else (float(first), float(last))

    def gaps(self, exchange: str, symbol: str, gap_s: float, limit: int = coverage.DEFAULT_LIMIT) -> Coverage:
        """Time gaps over `gap_s` and, where its trade ids are consecutive, skipped ids
        (`app.market.coverage` says when they are): all counted, the first `limit` of each
        listed. SQLite does the looking; few ticks become Python objects (`sqlite_gaps`)."""
        with self._lock:
            market = self._market(exchange, symbol)
            if market is None:
                return Coverage.empty(coverage.check_gap_s(gap_s))
            return sqlite_gaps.find(self._db, market[0], market[1], gap_s, limit)

    def markets(self) -> list[tuple[str, str]]:
        with self._lock:
            q = "SELECT exchange, symbol FROM markets ORDER BY exchange, symbol"
            return [(e, s) for e, s in self._db.execute(q)]

    def _market(self, exchange: str, symbol: str) -> _Market | None:
        row = self._db.execute(
            "SELECT id, has_trade_id, has_side FROM markets WHERE exchange = ? AND symbol = ?",
            (exchange, symbol),
        ).fetchone()
        return None if row is None else (int(row[0]), bool(row[1]), bool(row[2]))


if TYPE_CHECKING:  # mypy proves here that the SQLite store implements the seam
    _conforms: type[TickStorage] = TickStore
