"""Trade ticks: the one schema every source, the store and the features agree on.

Ticks travel in bulk as `TickArrays` (columns as numpy arrays) because every
consumer downstream (store inserts, feature windows) works on columns; the
row type `Tick` exists for sources and the HTTP edge, where trades arrive one
by one.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import IO

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not installed

from app.atomic import atomic_write

SIDES = ("buy", "sell")


class TickError(ValueError):
    """Bad tick data; the message names the row and the reason so a person can fix the file."""

    def __init__(self, reason: str, row: int | None = None) -> None:
        self.reason = reason
        self.row = row
        super().__init__(reason if row is None else f"row {row}: {reason}")


@dataclass(frozen=True, slots=True)
class Tick:
    time: float  # unix seconds
    price: float
    amount: float
    trade_id: str | None = None
    side: str | None = None  # "buy" | "sell": the taker's side, when the exchange says


@dataclass(frozen=True)
class TickArrays:
    """Columns of ticks in time order. `trade_id`/`side` are object arrays or None when unknown.

    `ordinal` is how a source without trade ids tells identical-looking trades apart: a
    tick's index among the id-less ticks of the *source* with the same (time, price,
    amount), counted from the start of that time in the source (see `ordinals`). It
    travels with slices, so a page carries its rows' place in the whole source and the
    store keys them by it; where it is None the store numbers the ticks within the batch.
    """

    time: np.ndarray  # float64, unix seconds
    price: np.ndarray  # float64
    amount: np.ndarray  # float64
    trade_id: np.ndarray | None = None
    side: np.ndarray | None = None
    ordinal: np.ndarray | None = None  # int64; -1 on ticks that have a trade id

    def __post_init__(self) -> None:
        n = len(self.time)
        for name in ("price", "amount", "trade_id", "side", "ordinal"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise TickError(f"column {name!r} has {len(col)} values, time has {n}")

    def __len__(self) -> int:
        return len(self.time)

    def __getitem__(self, key: slice) -> TickArrays:
        if not isinstance(key, slice):
            raise TypeError("TickArrays supports slicing only; use .row(i) for one tick")
        return TickArrays(
            self.time[key],
            self.price[key],
            self.amount[key],
            None if self.trade_id is None else self.trade_id[key],
            None if self.side is None else self.side[key],
            None if self.ordinal is None else self.ordinal[key],
        )

    def with_ordinals(self) -> TickArrays:
        """These ticks numbered as a whole source (`ordinals`), for sources that see every
        row of each time they hand out, so that any slice of them keeps its true keys."""
        return replace(self, ordinal=ordinals(self))

    def row(self, i: int) -> Tick:
        return Tick(
            float(self.time[i]),
            float(self.price[i]),
            float(self.amount[i]),
            None if self.trade_id is None else _opt_str(self.trade_id[i]),
            None if self.side is None else _opt_str(self.side[i]),
        )

    def rows(self) -> list[Tick]:
        return [self.row(i) for i in range(len(self))]

    @classmethod
    def empty(cls) -> TickArrays:
        z = np.empty(0, dtype=np.float64)
        return cls(z, z.copy(), z.copy())

    @classmethod
    def from_ticks(cls, ticks: Sequence[Tick]) -> TickArrays:
        has_id = any(t.trade_id is not None for t in ticks)
        has_side = any(t.side is not None for t in ticks)
        return cls(
            np.fromiter((t.time for t in ticks), np.float64, len(ticks)),
            np.fromiter((t.price for t in ticks), np.float64, len(ticks)),
            np.fromiter((t.amount for t in ticks), np.float64, len(ticks)),
            np.array([t.trade_id for t in ticks], dtype=object) if has_id else None,
            np.array([t.side for t in ticks], dtype=object) if has_side else None,
        )

    @classmethod
    def concat(cls, parts: Iterable[TickArrays]) -> TickArrays:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()

        def opt(name: str) -> np.ndarray | None:
            cols = [getattr(p, name) for p in parts]
            if all(c is None for c in cols):
                return None
            return np.concatenate(
                [
                    np.full(len(p), None, dtype=object) if c is None else c
                    for p, c in zip(parts, cols, strict=True)
                ]
            )

        # Ordinals only mean something when every part has them (numbered by one source);
        # otherwise the store numbers the concatenation as one batch.
        has_ord = all(p.ordinal is not None for p in parts)
        return cls(
            np.concatenate([p.time for p in parts]),
            np.concatenate([p.price for p in parts]),
            np.concatenate([p.amount for p in parts]),
            opt("trade_id"),
            opt("side"),
            np.concatenate([p.ordinal for p in parts]) if has_ord else None,
        )


def _opt_str(v: object) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return str(v)


def missing_ids(trade_id: np.ndarray) -> np.ndarray:
    """Mask of ticks without a trade id: None, NaN and '' all mean unknown (as in the CSV reader)."""
    s = pd.Series(trade_id, dtype=object)
    mask: np.ndarray = s.isna().to_numpy() | (s.astype(str) == "").to_numpy()
    return mask


def ordinals(ticks: TickArrays, no_id: np.ndarray | None = None) -> np.ndarray:
    """Each id-less tick's index among the id-less ticks with its (time, price, amount); -1
    for ticks with a trade id (the id alone identifies them). `no_id`: the mask, if known.

    Two real trades that look alike get 0 and 1, so both are kept, while the same trade
    delivered again gets the same number and the store drops it. The numbers are only
    right if the ticks hold every row of each of their times from the source (a whole
    file, a page that begins at the start of a second): numbering a page that begins
    inside a second from 0 would take its first repeats for ones already stored.
    Vectorised: one stable lexsort, no per-row Python.
    """
    n = len(ticks)
    if no_id is None:
        no_id = np.ones(n, dtype=bool) if ticks.trade_id is None else missing_ids(ticks.trade_id)
    idx = np.flatnonzero(no_id)
    out = np.full(n, -1, dtype=np.int64)
    if idx.size:
        t, p, a = ticks.time[idx], ticks.price[idx], ticks.amount[idx]
        order = np.lexsort((a, p, t))  # stable: equal rows keep their order
        t, p, a = t[order], p[order], a[order]
        new = np.ones(idx.size, dtype=bool)
        new[1:] = (t[1:] != t[:-1]) | (p[1:] != p[:-1]) | (a[1:] != a[:-1])
        pos = np.arange(idx.size)
        out[idx[order]] = pos - np.maximum.accumulate(np.where(new, pos, 0))
    return out


def validate(ticks: TickArrays, *, first_row: int = 0) -> None:
    """Reject ticks no model or store should see; raises TickError naming the first bad row.

    `first_row` offsets the reported row numbers (a CSV's first data line, a
    request's first index), so the message points at the place the user edits.
    """
    checks: tuple[tuple[str, np.ndarray, Callable[[np.ndarray], np.ndarray], str], ...] = (
        ("time", ticks.time, lambda c: ~np.isfinite(c), "time is not a finite number"),
        ("price", ticks.price, lambda c: ~np.isfinite(c), "price is not a finite number"),
        ("price", ticks.price, lambda c: c <= 0, "price must be > 0"),
        ("amount", ticks.amount, lambda c: ~np.isfinite(c), "amount is not a finite number"),
        ("amount", ticks.amount, lambda c: c < 0, "amount must be >= 0"),
    )
    for name, col, bad_of, reason in checks:
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(bad_of(col))
        if bad.size:
            i = int(bad[0])
            raise TickError(f"{reason} ({name}={float(col[i])!r})", first_row + i)
    back = np.flatnonzero(np.diff(ticks.time) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise TickError(
            f"time goes backwards ({float(ticks.time[i])!r} after {float(ticks.time[i - 1])!r}); "
            "ticks must be sorted by time",
            first_row + i,
        )
    if ticks.side is not None:
        ok = np.isin(ticks.side, np.array([*SIDES, None], dtype=object))
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise TickError(f"side must be 'buy', 'sell' or empty, got {ticks.side[i]!r}", first_row + i)
    if ticks.ordinal is not None:
        _validate_ordinals(ticks, ticks.ordinal, first_row)


def _validate_ordinals(ticks: TickArrays, o: np.ndarray, first_row: int) -> None:
    """Ordinals (`o`, the ticks' own) come from code, not people, but a wrong one loses a
    trade silently (the store drops a repeated key), so a source's numbering bug fails
    loudly instead."""
    if o.dtype.kind not in "iu":
        raise TickError(f"ordinal must hold integers, got {o.dtype}")
    no_id = np.ones(len(o), dtype=np.bool_) if ticks.trade_id is None else missing_ids(ticks.trade_id)
    bad = np.flatnonzero(no_id & (o < 0))
    if bad.size:
        i = int(bad[0])
        raise TickError(f"a tick without a trade id needs an ordinal >= 0, got {int(o[i])}", first_row + i)
    idx = np.flatnonzero(no_id)
    t, p, a, k = ticks.time[idx], ticks.price[idx], ticks.amount[idx], o[idx]
    order = np.lexsort((k, a, p, t))
    t, p, a, k = t[order], p[order], a[order], k[order]
    same = (t[1:] == t[:-1]) & (p[1:] == p[:-1]) & (a[1:] == a[:-1]) & (k[1:] == k[:-1])
    if same.any():
        i = int(idx[order[int(np.flatnonzero(same)[0]) + 1]])
        raise TickError(
            f"ordinal {int(o[i])} repeats for identical (time, price, amount) ticks; it must tell them apart",
            first_row + i,
        )


# ---------------------------------------------------------------- CSV


def read_csv(source: str | os.PathLike[str] | io.TextIOBase) -> TickArrays:
    """Read the ancestor's CSV (unnamed index column, then time,price,amount) or plain
    `time,price,amount[,trade_id,side]`, validated.

    Rows are reported as file line numbers (the header is line 1).
    """
    try:
        df = pd.read_csv(source, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as e:
        raise TickError("the CSV file is empty; expected a header time,price,amount") from e
    except pd.errors.ParserError as e:
        raise TickError(f"not a readable CSV: {e}") from e
    cols = [c.strip() for c in df.columns]
    df.columns = cols
    if cols and (cols[0] == "" or cols[0].startswith("Unnamed")):
        df = df.iloc[:, 1:]  # the ancestor's pandas index column
    missing = [c for c in ("time", "price", "amount") if c not in df.columns]
    if missing:
        raise TickError(
            f"CSV lacks column(s) {', '.join(missing)}; expected a header time,price,amount"
            f"[,trade_id,side], got {', '.join(cols) or 'none'}"
        )
    first_line = 2
    num = {}
    for name in ("time", "price", "amount"):
        raw = df[name].str.strip()
        val = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(val) & ~raw.str.lower().isin(("nan",)).to_numpy())
        if bad.size:
            i = int(bad[0])
            raise TickError(f"{name} is not a number: {raw.iloc[i]!r}", first_line + i)
        num[name] = val
    trade_id = side = None
    if "trade_id" in df.columns:
        trade_id = _blank_is_none(df["trade_id"].str.strip().to_numpy())
    if "side" in df.columns:
        side = _blank_is_none(df["side"].str.strip().str.lower().to_numpy())
    ticks = TickArrays(num["time"], num["price"], num["amount"], trade_id, side)
    validate(ticks, first_row=first_line)
    return ticks


def _blank_is_none(values: np.ndarray) -> np.ndarray:
    """An object column with None for each empty cell (unknown, as in a source's ticks)."""
    out = values.astype(object)
    out[values == ""] = None
    return out


def write_csv(ticks: TickArrays, path: str | os.PathLike[str]) -> None:
    """Write plain time,price,amount[,trade_id,side] CSV atomically (temp file + rename)."""
    with atomic_write(path, "w", newline="") as f:
        write_csv_to(ticks, f)


def write_csv_to(ticks: TickArrays, f: IO[str]) -> None:
    header = ["time", "price", "amount"]
    extra = [c for c in ("trade_id", "side") if getattr(ticks, c) is not None]
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header + extra)
    cols = [ticks.time.tolist(), ticks.price.tolist(), ticks.amount.tolist()]
    cols += [["" if v is None else v for v in getattr(ticks, c)] for c in extra]
    w.writerows(zip(*cols, strict=True))
