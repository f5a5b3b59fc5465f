"""How a batch of ticks gets into PostgreSQL: binary COPY, built by numpy where it can be.

A tick's identity is its trade id, else (time, price, amount, ordinal), as in SQLite. `ticks`
keeps an id that is a plain integer (`coverage.plain_ids`: what exchanges that number their
trades send) as `trade_num` (int8) and any other as `trade_text`: each id has one form whichever
batch brings it, so each kind of key has one unique index. Then a batch whose ticks all have
plain ids, or all have none, is rows of one width: a numpy structured array, written as it is.

Where such a batch's keys are all past the market's stored ones (a market's first ticks, the
next page of an exchange that numbers trades in order, later times for ticks without ids), it
is copied straight into `ticks`. Otherwise it goes into a temporary staging table first, and an
INSERT ... SELECT moves the rows whose keys no stored tick has (NOT EXISTS on each unique index's
key). A batch of mixed rows (text ids, or ids on some ticks only) is copied row by row (psycopg's
write_row, ~0.5 us a row in C) and always staged.

Not ON CONFLICT DO NOTHING: its speculative insertion costs nearly three times a plain insert.
Both paths are safe because every insert first row-locks its market (`PgTickStore._allocate`),
so no other writer adds to it meanwhile; a batch's own repeated ids are dropped before the copy
(the first kept, as SQLite's INSERT OR IGNORE keeps it), and the unique indexes stand behind both.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not installed

from app.market.coverage import INT64_MAX, INT64_MIN
from app.market.sqlite_rows import opt_str_col
from app.market.ticks import TickArrays, missing_ids, ordinals

if TYPE_CHECKING:
    import psycopg

STAGE = "CREATE TEMPORARY TABLE IF NOT EXISTS tick_stage (LIKE ticks) ON COMMIT DELETE ROWS"
SIDES = (None, "buy", "sell")  # `ticks.side`'s codes
# `ticks`'s columns (in its order) with their binary types
_TYPES = {
    "market_id": (">i8", "int8"),
    "time": (">f8", "float8"),
    "seq": (">i8", "int8"),
    "price": (">f8", "float8"),
    "amount": (">f8", "float8"),
    "trade_num": (">i8", "int8"),
    "trade_text": ("", "text"),
    "side": (">i2", "int2"),
    "ord": (">i8", "int8"),
}
_PLAIN = r"0|-?[1-9][0-9]{0,18}"  # a plain integer's text; int64's bounds are checked on its value
_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)  # 1 .. 10**18
_COPY = "COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
# binary COPY: a signature, flags and header extension length; each row its field count, then
# each field's length and value (big-endian); -1 as a field count ends the data
_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_TRAILER = b"\xff\xff"

# a staged row of each kind of key is new when no stored tick of its market has its key
_NEW = {
    "num": "s.trade_num IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ticks t"
    " WHERE t.market_id = s.market_id AND t.trade_num = s.trade_num)",
    "text": "s.trade_text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ticks t"
    " WHERE t.market_id = s.market_id AND t.trade_text = s.trade_text)",
    "none": "s.trade_num IS NULL AND s.trade_text IS NULL AND NOT EXISTS (SELECT 1 FROM ticks t"
    " WHERE t.market_id = s.market_id AND t.trade_num IS NULL AND t.trade_text IS NULL"
    " AND t.time = s.time AND t.price = s.price AND t.amount = s.amount AND t.ord = s.ord)",
}
_MOVE = "INSERT INTO ticks SELECT * FROM tick_stage s WHERE {}"
# the last stored key of each kind, from the end of its partial unique index
_LAST = {
    "num": "SELECT max(trade_num) FROM ticks WHERE market_id = %s",
    "none": "SELECT max(time) FROM ticks WHERE market_id = %s AND trade_num IS NULL AND trade_text IS NULL",
}


@dataclass(frozen=True)
class Batch:
    """One insert's rows as COPY takes them, made before its transaction opens, less the repeats
    of an id earlier in the batch. `rows` holds every column but trade_text (and trade_num where
    no tick has a plain id); `numbered` and `texts` say which rows have which form of id, for a
    batch that mixes them (None: `rows` is the whole batch, of one width)."""

    n: int  # ticks given, repeats included: each takes a seq, as in SQLite
    rows: np.ndarray  # market_id and seq (a row's index among the n until `store`) are set by `store`
    numbered: np.ndarray | None  # rows whose id is in trade_num
    texts: list[str | None] | None  # each row's trade_text
    keys: frozenset[str]  # the kinds of key present: "num", "text", "none" (as in _NEW)
    has_side: bool

    @property
    def has_id(self) -> bool:
        return bool(self.keys - {"none"})

    @classmethod
    def of(cls, ticks: TickArrays) -> Batch:
        n = len(ticks)
        has = np.zeros(n, dtype=bool) if ticks.trade_id is None else ~missing_ids(ticks.trade_id)
        side = np.zeros(n, dtype=np.int16)
        if ticks.side is not None:
            side = (ticks.side == SIDES[1]) * 1 + (ticks.side == SIDES[2]) * 2
        num, numbered, texts, keep = _ids(ticks, has)
        names = [c for c in _TYPES if c != "trade_text" and (c != "trade_num" or num is not None)]
        rows = np.empty(n, dtype=_row(names))
        rows["fields"] = len(names)
        for c in names:
            rows[f"{c}_len"] = rows.dtype[c].itemsize
        rows["time"], rows["price"], rows["amount"] = ticks.time, ticks.price, ticks.amount
        rows["seq"], rows["side"] = np.arange(n), side
        rows["ord"] = ordinals(ticks, ~has) if ticks.ordinal is None else np.where(has, -1, ticks.ordinal)
        if num is not None:
            rows["trade_num"] = num
        kinds = (
            ("num", num is not None),  # some id is plain
            ("text", texts is not None and any(t is not None for t in texts)),
            ("none", not has.all()),
        )
        keys = frozenset(k for k, present in kinds if present)
        if keep is not None:
            rows = rows[keep]
            numbered = None if numbered is None else numbered[keep]
            texts = None if texts is None else list(compress(texts, keep.tolist()))
        return cls(n, rows, numbered, texts, keys, bool(side.any()))


def _ids(
    ticks: TickArrays, has: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None, list[str | None] | None, np.ndarray | None]:
    """(trade_num for each row, or None where no id is plain; which rows are numbered and each
    row's trade_text, both None for a batch of one width; which rows to keep, None for all)."""
    n = len(has)
    if not has.any():
        return None, None, None, None
    assert ticks.trade_id is not None
    ints = plain_ints(ticks.trade_id[has])
    if ints is not None and has.all():
        # ids in order, as a batch usually is, cannot repeat: only ids out of order are looked at
        repeats = None if (np.diff(ints) > 0).all() else pd.Series(ints).duplicated().to_numpy()
        return ints, None, None, None if repeats is None or not repeats.any() else ~repeats
    texts = list(opt_str_col(ticks.trade_id, n)[0])
    repeats = pd.Series(texts, dtype=object).duplicated().to_numpy() & has
    numbered = pd.Series(texts, dtype=object).str.fullmatch(_PLAIN, na=False).to_numpy(dtype=bool).copy()
    num = np.zeros(n, dtype=np.int64)
    for i in np.flatnonzero(numbered).tolist():
        value = int(str(texts[i]))
        if INT64_MIN < value < INT64_MAX:
            num[i], texts[i] = value, None
        else:
            numbered[i] = False
    keep = ~repeats if repeats.any() else None
    return (num if numbered.any() else None), numbered, texts, keep


def plain_ints(ids: np.ndarray) -> np.ndarray | None:
    """`coverage.plain_ids` (the ids as int64 when each is a plain decimal integer strictly inside
    int64, else None) in a third of its time on a million ids, read as bytes: a non-ASCII id is no
    plain integer, and of the ASCII texts that read as an integer (int's rules: a sign, leading
    zeros, spaces, underscores) the plain one is the shortest, so plain means as long as it."""
    try:
        text = ids.astype("S")
        values = text.astype(np.int64)
    except (UnicodeEncodeError, ValueError, OverflowError):
        return None
    if (values <= INT64_MIN).any() or (values >= INT64_MAX).any():
        return None
    digits = np.maximum(np.searchsorted(_POWERS_OF_TEN, np.abs(values), side="right"), 1)
    return values if np.array_equal(np.char.str_len(text), digits + (values < 0)) else None


def _row(columns: list[str]) -> np.dtype:
    """One binary COPY row of these columns, none of them NULL: a fixed width."""
    fields = [("fields", ">i2")]
    for c in columns:
        fields += [(f"{c}_len", ">i4"), (c, _TYPES[c][0])]
    return np.dtype(fields)


def stage(conn: psycopg.Connection[Any]) -> None:
    """The connection's staging table (temporary: each connection has its own, emptied at commit)."""
    conn.execute(STAGE)


def store(conn: psycopg.Connection[Any], market_id: int, seq0: int, batch: Batch) -> int:
    """Copy the batch in, numbered from seq0 (in place: a batch is stored once), keeping the rows
    whose keys no stored tick has; returns how many were new. Runs inside the caller's
    transaction, which holds the market's row lock (see the module's docstring)."""
    rows = batch.rows
    rows["market_id"], rows["seq"] = market_id, rows["seq"] + seq0
    names = [c for c in _TYPES if c in (rows.dtype.names or ())]
    with conn.cursor() as cur:
        if batch.texts is None and (seq0 == 0 or _past_stored(cur, market_id, batch)):
            _copy_fixed(cur, "ticks", names, rows)
            return len(rows)
        if batch.texts is None:
            _copy_fixed(cur, "tick_stage", names, rows)
        else:
            _copy_mixed(cur, rows, batch)
        cur.execute("SET LOCAL work_mem = '256MB'")  # room to hash the batch's keys
        new = 0
        for key in sorted(batch.keys):
            cur.execute(_MOVE.format(_NEW[key]))
            new += max(0, cur.rowcount)
    return new


def _past_stored(cur: psycopg.Cursor[Any], market_id: int, batch: Batch) -> bool:
    """Whether every key of a batch of one width comes after the market's stored keys of its
    kind (then none can be stored already): one lookup at the end of an index."""
    (key,) = batch.keys  # a batch of one width has one kind of key
    row = cur.execute(_LAST[key], (market_id,)).fetchone()
    last = None if row is None else row[0]
    first = batch.rows["trade_num" if key == "num" else "time"].min()
    return last is None or bool(first > last)


def _copy_fixed(cur: psycopg.Cursor[Any], table: str, names: list[str], rows: np.ndarray) -> None:
    with cur.copy(_COPY.format(table=table, columns=", ".join(names))) as copy:
        copy.write(_HEADER)
        copy.write(rows.data.cast("B"))
        copy.write(_TRAILER)


def _copy_mixed(cur: psycopg.Cursor[Any], rows: np.ndarray, batch: Batch) -> None:
    """A batch that mixes forms of id, into the staging table row by row: each id as a number
    where it is plain, as text where not."""
    assert batch.texts is not None and batch.numbered is not None
    names = [c for c in _TYPES if c in (rows.dtype.names or ()) or c == "trade_text"]
    cols = {c: rows[c].tolist() for c in names if c not in ("trade_num", "trade_text")}
    if "trade_num" in names:
        cols["trade_num"] = [
            v if k else None for v, k in zip(rows["trade_num"].tolist(), batch.numbered, strict=True)
        ]
    cols["trade_text"] = batch.texts
    with cur.copy(_COPY.format(table="tick_stage", columns=", ".join(names))) as copy:
        copy.set_types([_TYPES[c][1] for c in names])
        for row in zip(*(cols[c] for c in names), strict=True):
            copy.write_row(row)
