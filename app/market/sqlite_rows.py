"""How tick arrays become SQLite rows and back: the column conversions the tick store runs on
every page it stores and every read it answers (kept apart so the store holds only its SQL)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not installed

from app.market.ticks import TickArrays

Market = tuple[int, bool, bool]  # id, has ever had a trade_id, has ever had a side
AFTER_DTYPE = np.dtype([("time", "f8"), ("price", "f8"), ("amount", "f8"), ("seq", "i8")])
_NULL = np.array(None, dtype=object)  # NULL for np.where (a bare None does not type-check there)


def opt_str_col(col: np.ndarray | None, n: int) -> tuple[Iterable[str | None], np.ndarray | None]:
    """Values sqlite3 can bind (str or None; numpy scalars it cannot) and the mask of
    missing ones; '' and NaN mean unknown, as in the CSV reader and `ticks.missing_ids`
    (inlined here: one Series for both is measurably faster on every page stored)."""
    if col is None:
        return repeat(None, n), None
    s = pd.Series(col, dtype=object)
    text = s.astype(str)
    missing = s.isna().to_numpy() | (text == "").to_numpy()
    return np.where(missing, _NULL, text.to_numpy(dtype=object)).tolist(), missing


def ord_col(ords: np.ndarray, no_id: np.ndarray | None) -> list[int | None]:
    """The ord column: NULL for ticks with a trade id, which the no-id index skips."""
    if no_id is None:
        col: list[int | None] = ords.tolist()
    else:
        col = np.where(no_id, ords.astype(object), _NULL).tolist()
    return col


def time_range(market_id: int, start: float | None, end: float | None) -> tuple[str, list[float | int]]:
    """The WHERE clause (and its arguments) of one market's ticks with start <= time < end."""
    where = "market_id = ?"
    args: list[float | int] = [market_id]
    if start is not None:
        where += " AND time >= ?"
        args.append(float(start))
    if end is not None:
        where += " AND time < ?"
        args.append(float(end))
    return where, args


def any_known(missing: np.ndarray | None) -> bool:
    return missing is not None and not bool(missing.all())


def columns(market: Market, ids: bool) -> tuple[str, np.dtype]:
    fields = [("time", "f8"), ("price", "f8"), ("amount", "f8")]
    if ids and market[1]:
        fields.append(("trade_id", "O"))
    if ids and market[2]:
        fields.append(("side", "O"))
    return ", ".join(name for name, _ in fields), np.dtype(fields)


def to_arrays(rows: np.ndarray) -> TickArrays:
    def opt(name: str) -> np.ndarray | None:
        if rows.dtype.names is None or name not in rows.dtype.names:
            return None
        col = np.ascontiguousarray(rows[name])
        return None if not col.size or (col == None).all() else col  # noqa: E711

    return TickArrays(
        np.ascontiguousarray(rows["time"]),
        np.ascontiguousarray(rows["price"]),
        np.ascontiguousarray(rows["amount"]),
        opt("trade_id"),
        opt("side"),
    )
