"""How the PostgreSQL tick store finds a market's gaps (`app.market.coverage`, whose rule this
keeps) inside the server: a window function (lag) pairs each tick with the one before it, and
only the pairs that are gaps leave the server.

One pass in the store's order (time, seq), which the primary key gives without sorting, counts
everything: ticks, time gaps, and (for ids) the steps over one, the smallest and largest id, and
whether ids rise with time. Exchanges number trades in time order, so they almost always do;
then id order is time order, and that pass's steps are the id gaps. Otherwise (a backfill that
brought earlier ids later) one more pass sorts by id. Only where the counts say there are gaps
to list does a query fetch the first `limit` of them.

The store keeps a trade id that is a plain integer strictly inside int64 (the rule's kind of id)
as `trade_num`, any other as text (`pg_copy`), so the rule's precondition is that every tick has
a trade_num: count(trade_num) = count(*).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.market.coverage import Coverage, IdGap, TimeGap, check_gap_s, consecutive
from app.market.pg_rows import Market

if TYPE_CHECKING:
    import psycopg

SORT_MEMORY = "256MB"  # id order, where it is not time order, sorts (id, time) pairs: in memory if they fit

_PAIRS = """SELECT time, seq, lag(time) OVER w AS prev_t, {id} AS id, lag({id}) OVER w AS prev_id
    FROM ticks WHERE market_id = %(m)s{where} WINDOW w AS (ORDER BY {order})"""
_SUMMARY = """SELECT count(*), count(id), min(time), max(time), count(*) FILTER (WHERE time > prev_t + %(g)s),
    count(*) FILTER (WHERE id > prev_id + 1), COALESCE(bool_and(id > prev_id), true), min(id), max(id)
    FROM ({pairs}) s"""
_TIME_GAPS = "SELECT prev_t, time FROM ({pairs}) s WHERE time > prev_t + %(g)s ORDER BY time, seq LIMIT %(k)s"
_ID_GAPS = """SELECT prev_id, id, prev_t, time, count(*) OVER () FROM ({pairs}) s
    WHERE id > prev_id + 1 ORDER BY {order} LIMIT %(k)s"""


def find(conn: psycopg.Connection[Any], market: Market, gap_s: float, limit: int) -> Coverage:
    """A market's coverage. The caller holds one snapshot around it (a repeatable-read
    transaction), so that every statement sees the same ticks."""
    gap, limit = check_gap_s(gap_s), max(0, int(limit))
    ids = "trade_num" if market.has_trade_id else "NULL::bigint"
    by_time = _PAIRS.format(id=ids, where="", order="time, seq")
    args = {"m": market.id, "g": gap, "k": limit}
    n, with_id, first, last, time_count, runs, in_order, low, high = _one(
        conn, _SUMMARY.format(pairs=by_time), args
    )
    if n == 0:
        return Coverage.empty(gap)
    time_gaps: tuple[TimeGap, ...] = ()
    if time_count and limit:
        rows = conn.execute(_TIME_GAPS.format(pairs=by_time), args).fetchall()
        time_gaps = tuple(TimeGap(float(a), float(b)) for a, b in rows)
    id_gaps: tuple[IdGap, ...] = ()
    usable = market.has_trade_id and with_id == n
    if usable and not in_order:  # count the steps in id order instead, along ticks_trade_num
        conn.execute(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
        by_id = _PAIRS.format(id=ids, where=" AND trade_num IS NOT NULL", order="trade_num")
        rows = conn.execute(_ID_GAPS.format(pairs=by_id, order="id"), {**args, "k": max(limit, 1)}).fetchall()
        runs = int(rows[0][4]) if rows else 0
        id_gaps = _id_gaps(rows[:limit])
    elif usable and runs and limit:
        id_gaps = _id_gaps(conn.execute(_ID_GAPS.format(pairs=by_time, order="time, seq"), args).fetchall())
    ok = usable and consecutive(int(n), int(runs))
    return Coverage(
        ticks=int(n),
        first_time=float(first),
        last_time=float(last),
        gap_s=gap,
        time_gaps=time_gaps,
        id_gaps=id_gaps if ok else (),
        time_gap_count=int(time_count),
        id_gap_count=int(runs) if ok else 0,
        ids_consecutive=ok,
        missing_ids=int(high) - int(low) + 1 - int(n) if ok else 0,
    )


def _id_gaps(rows: list[Any]) -> tuple[IdGap, ...]:
    return tuple(IdGap(int(a), int(b), int(b) - int(a) - 1, float(ta), float(tb)) for a, b, ta, tb, _ in rows)


def _one(conn: psycopg.Connection[Any], sql: str, args: dict[str, Any]) -> tuple[Any, ...]:
    row = conn.execute(sql, args).fetchone()
    assert row is not None  # an aggregate without GROUP BY always answers one row
    return tuple(row)
