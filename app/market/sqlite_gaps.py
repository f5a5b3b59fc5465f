"""How the SQLite tick store finds a market's gaps (`app.market.coverage`, whose rule this
keeps) without turning each tick into a Python object.

The sqlite3 module costs ~0.8 us a row (a tuple and a float each), SQLite's own walk of the
b-tree ~0.1 us, and its window functions (LAG) ~1.5 us: reading a million ticks out, or
LAG over them, takes seconds. So:

- time gaps: a walk of the time index (`_WALK`). From a tick at t, the next stop is the
  last tick at or before t + gap_s; when there is none beyond t, the next tick starts a
  gap. Two stops cover more than gap_s, so a dense market is a few thousand index
  descents however many ticks it has. A sparse one (spanning more than ticks / WALK_SHARE
  gap lengths) reads its times instead, which is then cheaper;
- ids: a look at about every `BUCKET` ticks (a time range of them): count, smallest and
  largest id, how many are plain integers, all computed in SQLite. A range whose ids fill
  smallest..largest has no hole inside (the ids are unique); a run between two ranges is
  the step from one's largest to the next one's smallest. Only ranges with a hole inside
  are read out (halved first while they hold more than `FETCH_MAX`), and the look stops
  early once the ids cannot count as consecutive. Ranges whose ids interleave (ids out of
  time order) leave the shortcut: then every id is read.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from app.market.coverage import (
    INT64_MAX,
    INT64_MIN,
    Coverage,
    IdGap,
    TimeGap,
    after_gap,
    check_gap_s,
    consecutive,
    id_runs,
)

BUCKET = 1024  # ticks per first look at the ids
FETCH_MAX = 256  # a range with a hole inside is read out at this size or below, else halved
WALK_SHARE = 8  # walk the time index while the span is under ticks / WALK_SHARE gap lengths
_CHUNK = 65_536  # rows per fromiter when times are read out
_ROWS = np.dtype([("id", "i8"), ("t", "f8")])
_ROWS_PLAIN = np.dtype([("id", "i8"), ("t", "f8"), ("p", "i1")])

_WALK = """
WITH RECURSIVE walk(t, prev, gap) AS (
    SELECT :first, NULL, 0
    UNION ALL
    SELECT COALESCE(
             (SELECT MAX(time) FROM ticks WHERE market_id = :m AND time > t AND time <= t + :g),
             (SELECT MIN(time) FROM ticks WHERE market_id = :m AND time > t)),
           t,
           (SELECT MAX(time) FROM ticks WHERE market_id = :m AND time > t AND time <= t + :g) IS NULL
    FROM walk WHERE t IS NOT NULL)
SELECT prev, t FROM walk WHERE gap AND t IS NOT NULL"""

_PLAIN = "trade_id IS NOT NULL AND CAST(CAST(trade_id AS INTEGER) AS TEXT) = trade_id"
_RANGE = "market_id = ? AND time >= ? AND time < ?"
_LOOK = f"""
SELECT COUNT(*), MIN(CAST(trade_id AS INTEGER)), MAX(CAST(trade_id AS INTEGER)), COALESCE(SUM({_PLAIN}), 0)
FROM ticks WHERE {_RANGE}"""
_SPAN = f"SELECT MIN(time), MAX(time) FROM ticks WHERE {_RANGE}"
_READ = f"SELECT CAST(trade_id AS INTEGER), time FROM ticks WHERE {_RANGE} ORDER BY time, seq"
_READ_ALL = f"SELECT COALESCE(CAST(trade_id AS INTEGER), 0), time, {_PLAIN} FROM ticks WHERE market_id = ?"
_ID_TIME = "SELECT time FROM ticks WHERE market_id = ? AND trade_id = ?"
_FIRST = "SELECT time FROM ticks WHERE market_id = ? ORDER BY time LIMIT 1"
_LAST = "SELECT time FROM ticks WHERE market_id = ? ORDER BY time DESC LIMIT 1"


def find(db: sqlite3.Connection, market_id: int, has_ids: bool, gap_s: float, limit: int) -> Coverage:
    """A market's coverage, read in one snapshot of the file. `db` is in autocommit mode and
    held by the caller alone (the store's lock)."""
    gap, limit = check_gap_s(gap_s), max(0, int(limit))
    with _snapshot(db):
        n = int(db.execute("SELECT COUNT(*) FROM ticks WHERE market_id = ?", (market_id,)).fetchone()[0])
        if n == 0:
            return Coverage.empty(gap)
        first, last = (float(db.execute(q, (market_id,)).fetchone()[0]) for q in (_FIRST, _LAST))
        if (last - first) / gap <= n / WALK_SHARE:
            time_count, time_gaps = _walk(db, market_id, first, gap, limit)
        else:
            time_count, time_gaps = _read_times(db, market_id, gap, limit)
        ids = _Ids(db, market_id, n, limit).scan(first, last) if has_ids else None
        return Coverage(
            ticks=n,
            first_time=first,
            last_time=last,
            gap_s=gap,
            time_gaps=time_gaps,
            id_gaps=() if ids is None else ids.listed(),  # their times looked up in the same snapshot
            time_gap_count=time_count,
            id_gap_count=0 if ids is None else ids.runs,
            ids_consecutive=ids is not None,
            missing_ids=0 if ids is None else ids.missing,
        )


@contextmanager
def _snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """Every statement reads one state of the file (another process may be inserting); they
    only read, so the transaction is rolled back whatever happens."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def _walk(
    db: sqlite3.Connection, market_id: int, first: float, gap: float, limit: int
) -> tuple[int, tuple[TimeGap, ...]]:
    count, listed = 0, list[TimeGap]()
    for start, end in db.execute(_WALK, {"m": market_id, "first": first, "g": gap}):
        count += 1
        if len(listed) < limit:
            listed.append(TimeGap(float(start), float(end)))
    return count, tuple(listed)


def _read_times(
    db: sqlite3.Connection, market_id: int, gap: float, limit: int
) -> tuple[int, tuple[TimeGap, ...]]:
    """The same as `_walk`, from every time read out (a market whose gaps are too many to walk)."""
    count, listed = 0, list[TimeGap]()
    for t in _chunks(db, "SELECT time FROM ticks WHERE market_id = ? ORDER BY time, seq", (market_id,), "f8"):
        at = np.flatnonzero(after_gap(t, gap))
        count += len(at)
        listed += [TimeGap(float(t[i]), float(t[i + 1])) for i in at[: max(0, limit - len(listed))]]
    return count, tuple(listed)


def _chunks(db: sqlite3.Connection, sql: str, args: tuple[object, ...], dtype: str) -> Iterator[np.ndarray]:
    """One column in chunks, each beginning with the last value of the one before (so that
    steps across chunks are seen)."""
    cur = db.execute(sql, args)
    prev = np.empty(0, dtype=dtype)
    while True:
        part = np.fromiter((row[0] for row in cur.fetchmany(_CHUNK)), dtype=dtype)
        if not len(part):
            return
        yield np.concatenate((prev, part))
        prev = part[-1:]


@dataclass
class _Piece:
    """A time range of ticks as the id look sees it: its aggregates and, when they were read
    out, its rows (id, t) in time order."""

    count: int
    low: int
    high: int
    rows: np.ndarray | None = None

    def time_of(self, trade_id: int) -> float | None:
        """The time of the tick with `trade_id`, if the rows were read out."""
        if self.rows is None:
            return None
        return float(self.rows["t"][np.flatnonzero(self.rows["id"] == trade_id)[0]])


class _OutOfOrder(Exception):
    """Two ranges' ids interleave: the shortcut does not hold, every id is read instead."""


class _NotConsecutive(Exception):
    pass


@dataclass
class _Ids:
    """The id look (see the module's docstring); `scan` returns self when the ids are consecutive."""

    db: sqlite3.Connection
    market_id: int
    n: int
    limit: int
    runs: int = 0
    missing: int = 0
    found: list[tuple[int, int, float | None, float | None]] = field(default_factory=list)
    _high: int | None = None  # the largest id so far, and its tick's time when known
    _high_time: float | None = None

    def scan(self, first: float, last: float) -> _Ids | None:
        low = None
        try:
            try:
                for p in self._pieces(first, last):
                    low = p.low if low is None else low
                    self._take(p)
            except _OutOfOrder:
                low = self._read_all()
        except _NotConsecutive:
            return None
        if low is None or self._high is None or not consecutive(self.n, self.runs):
            return None
        self.missing = self._high - low + 1 - self.n
        return self

    def listed(self) -> tuple[IdGap, ...]:
        def time_of(trade_id: int, known: float | None) -> float:
            if known is not None:
                return known
            row = self.db.execute(_ID_TIME, (self.market_id, str(trade_id))).fetchone()
            return float(row[0])

        return tuple(IdGap(a, b, b - a - 1, time_of(a, ta), time_of(b, tb)) for a, b, ta, tb in self.found)

    def _pieces(self, first: float, last: float) -> Iterator[_Piece]:
        k = max(1, math.ceil(self.n / BUCKET))
        edges = np.linspace(first, last, k + 1).tolist()
        edges[-1] = math.inf  # the last tick belongs to the last range
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            yield from self._range(lo, hi)

    def _range(self, lo: float, hi: float) -> Iterator[_Piece]:
        """The ticks with lo <= time < hi as pieces: one look, halved while a hole inside and
        too many ticks to read out say so."""
        count, low, high, plain = self.db.execute(_LOOK, (self.market_id, lo, hi)).fetchone()
        if count == 0:
            return
        if plain < count or low <= INT64_MIN or high >= INT64_MAX:  # SQLite clamps at the bounds
            raise _NotConsecutive
        if high - low + 1 == count:
            yield _Piece(count, low, high)
            return
        if count > FETCH_MAX:
            t0, t1 = self.db.execute(_SPAN, (self.market_id, lo, hi)).fetchone()
            if t0 < t1:
                mid = t0 + (t1 - t0) / 2
                mid = mid if mid > t0 else t1  # both halves smaller, whatever the rounding
                yield from self._range(lo, mid)
                yield from self._range(mid, hi)
                return
        rows = np.fromiter(self.db.execute(_READ, (self.market_id, lo, hi)), dtype=_ROWS, count=count)
        yield _Piece(count, low, high, rows)

    def _take(self, p: _Piece) -> None:
        if self._high is not None:
            if p.low <= self._high:
                raise _OutOfOrder
            if p.low > self._high + 1:
                self._add(np.array([self._high]), np.array([p.low]), [self._high_time], [p.time_of(p.low)])
        if p.rows is not None:
            a, b, ta, tb = id_runs(p.rows["id"], p.rows["t"])
            self._add(a, b, ta.tolist(), tb.tolist())
        self._high, self._high_time = p.high, p.time_of(p.high)

    def _add(
        self, after: np.ndarray, before: np.ndarray, ta: list[float | None], tb: list[float | None]
    ) -> None:
        self.runs += len(after)
        room = self.limit - len(self.found)
        if room > 0:
            self.found += zip(
                after[:room].tolist(), before[:room].tolist(), ta[:room], tb[:room], strict=True
            )
        if not consecutive(self.n, self.runs):  # runs only grow: no use looking further
            raise _NotConsecutive

    def _read_all(self) -> int:
        """Every id and its time (ids out of time order): the rule applied to all at once."""
        rows = np.fromiter(self.db.execute(_READ_ALL, (self.market_id,)), dtype=_ROWS_PLAIN, count=self.n)
        ids = rows["id"]
        if not rows["p"].all() or (ids <= INT64_MIN).any() or (ids >= INT64_MAX).any():
            raise _NotConsecutive
        self.runs, self.found, self._high = 0, [], int(rows["id"].max())
        a, b, ta, tb = id_runs(rows["id"], rows["t"])
        self._add(a, b, ta.tolist(), tb.tolist())
        return int(rows["id"].min())
