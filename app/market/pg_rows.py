"""How ticks come out of PostgreSQL into numpy without a Python object per tick where it can be
helped (the way in is `pg_copy`'s; the PostgreSQL tick store keeps only its SQL).

A COPY TO sends every row as a message of its own, and taking a message off the connection
costs psycopg ~0.6 us, more than SQLite takes to hand over a whole row. So a read asks the
server to pack its rows: each becomes fixed-width big-endian binary (float8send, int8send),
`string_agg` joins them into one bytea per page of `PAGE` rows, and `np.frombuffer` reads that
page as a structured array: one round trip and no per-row work in Python. Trade ids travel as
int8 (`ticks.trade_num`); the few that are text as one NUL-separated bytea (text in PostgreSQL
cannot hold NUL), split once. Which form a row's id has, and its side, travel as bits of a
small `kind` field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from app.market.storage import StoreError
from app.market.ticks import TickArrays

if TYPE_CHECKING:
    import psycopg

PAGE = 1 << 20  # rows per packed page: ~40 MiB of bytea, far under PostgreSQL's 1 GiB a value

_SIDES = np.array([None, "buy", "sell"], dtype=object)  # `ticks.side`'s codes
_NUM, _TEXT = 1, 8  # `kind` bits: the id is in trade_num, in trade_text; bits 1-2: the side
_KIND_ID = "(trade_num IS NOT NULL)::int + 8 * (trade_text IS NOT NULL)::int"
_KIND_SIDE = "2 * side"


@dataclass(frozen=True)
class Market:
    id: int
    has_trade_id: bool  # has ever had a trade id: reads of a market that never had one skip it
    has_side: bool


@dataclass(frozen=True)
class Shape:
    """What one read packs per row beyond (time, price, amount, seq)."""

    ids: bool  # trade ids: numbers as int8, texts in a bytea of their own
    side: bool

    @classmethod
    def of(cls, market: Market, ids: bool) -> Shape:
        return cls(ids and market.has_trade_id, ids and market.has_side)

    @property
    def dtype(self) -> np.dtype:
        fields = [("time", ">f8"), ("price", ">f8"), ("amount", ">f8"), ("seq", ">i8")]
        if self.ids or self.side:
            fields.append(("kind", ">i2"))
        if self.ids:
            fields.append(("id", ">i8"))
        return np.dtype(fields)

    def sql(self, where: str, desc: bool) -> str:
        cols = ["time", "price", "amount", "seq"]
        packed = ["float8send(time)", "float8send(price)", "float8send(amount)", "int8send(seq)"]
        cols += ["trade_num", "trade_text"] if self.ids else []
        cols += ["side"] if self.side else []
        kind = [_KIND_ID] if self.ids else []
        kind += [_KIND_SIDE] if self.side else []
        if kind:
            packed.append(f"int2send(({' + '.join(kind)})::int2)")
        if self.ids:
            packed.append("int8send(COALESCE(trade_num, 0))")
        aggs = [f"string_agg({' || '.join(packed)}, ''::bytea)"]
        if self.ids:
            aggs.append("string_agg(convert_to(trade_text, 'UTF8'), '\\x00'::bytea)")
        order = "time DESC, seq DESC" if desc else "time, seq"
        # An aggregate takes its input in the order of the sorted subquery under it, PostgreSQL's
        # documented way to order it without a sort of its own (`string_agg(... ORDER BY ...)`
        # sorts again); `_pages` checks the order all the same.
        return (
            f"SELECT {', '.join(aggs)} FROM (SELECT {', '.join(cols)} FROM ticks"
            f" WHERE {where} ORDER BY {order} LIMIT %s) s"
        )


@dataclass
class Rows:
    """Packed rows in the order the query asked for, and (text ids) the ids of those that have one."""

    shape: Shape
    rows: np.ndarray
    texts: list[str] | None = None

    def reversed(self) -> Rows:
        texts = None if self.texts is None else self.texts[::-1]
        return Rows(self.shape, self.rows[::-1], texts)

    @property
    def seqs(self) -> np.ndarray:
        return self.rows["seq"].astype(np.int64)

    def arrays(self) -> TickArrays:
        r = self.rows
        kind = r["kind"].astype(np.int16) if "kind" in (r.dtype.names or ()) else None
        return TickArrays(
            r["time"].astype(np.float64),
            r["price"].astype(np.float64),
            r["amount"].astype(np.float64),
            self._trade_ids(kind) if self.shape.ids and kind is not None else None,
            self._sides(kind) if self.shape.side and kind is not None else None,
        )

    def _trade_ids(self, kind: np.ndarray) -> np.ndarray | None:
        numbered, texts = (kind & _NUM).astype(bool), (kind & _TEXT).astype(bool)
        if numbered.all():
            return _as_text(self.rows["id"])
        if not numbered.any() and not texts.any():
            return None
        out = np.full(len(kind), None, dtype=object)
        out[numbered] = _as_text(self.rows["id"][numbered])
        out[texts] = np.array(self.texts or [], dtype=object)
        return out

    def _sides(self, kind: np.ndarray) -> np.ndarray | None:
        code = (kind >> 1) & 3
        return _SIDES[code] if code.any() else None


def select(
    conn: psycopg.Connection[Any],
    shape: Shape,
    where: str,
    args: list[Any],
    *,
    desc: bool = False,
    limit: int | None = None,
) -> Rows:
    """The rows matching `where`, ordered by (time, seq) (descending with `desc`), the first
    `limit`: a page at a time, each page resuming past the last row of the one before. The
    caller holds one snapshot for all pages (`PgTickStore._snapshot`)."""
    pages: list[np.ndarray] = []
    texts: list[str] | None = [] if shape.ids else None
    for rows, ids in _pages(conn, shape, where, args, desc, limit):
        pages.append(rows)
        if texts is not None:
            texts += ids
    rows = np.concatenate(pages) if len(pages) > 1 else pages[0] if pages else np.empty(0, shape.dtype)
    return Rows(shape, rows, texts)


def _pages(
    conn: psycopg.Connection[Any], shape: Shape, where: str, args: list[Any], desc: bool, limit: int | None
) -> Iterator[tuple[np.ndarray, list[str]]]:
    left = limit
    past: tuple[float, int] | None = None
    beyond = (
        " AND time <= %s AND (time < %s OR seq < %s)"
        if desc
        else " AND time >= %s AND (time > %s OR seq > %s)"
    )
    while left is None or left > 0:
        take = PAGE if left is None else min(PAGE, left)
        w, a = where, list(args)
        if past is not None:
            w, a = w + beyond, [*a, past[0], past[0], past[1]]
        got = conn.execute(shape.sql(w, desc), [*a, take], binary=True).fetchone()
        if got is None or got[0] is None:
            return
        rows = np.frombuffer(got[0], dtype=shape.dtype)
        _check_order(rows, desc)
        ids = bytes(got[1]).split(b"\0") if shape.ids and got[1] is not None else []
        yield rows, [i.decode() for i in ids]
        if len(rows) < take:
            return
        left = None if left is None else left - len(rows)
        past = (float(rows["time"][-1]), int(rows["seq"][-1]))


def _as_text(ids: np.ndarray) -> np.ndarray:
    """int8 ids as the texts they were given as (a plain integer prints back as itself)."""
    ints = ids.astype(np.int64).tolist()
    return np.fromiter(map(str, ints), dtype=object, count=len(ints))  # 3x numpy's casts to str


def _check_order(rows: np.ndarray, desc: bool) -> None:
    """Rows strictly in (time, seq) order, as asked (a few milliseconds a million rows): a wrong
    order would be a wrong answer, so it is an error, never silently passed on."""
    t, q = rows["time"], rows["seq"]
    later = (t[1:] > t[:-1]) | ((t[1:] == t[:-1]) & (q[1:] > q[:-1]))
    if not (~later if desc else later).all():
        raise StoreError("PostgreSQL returned ticks out of (time, seq) order; please report this")
