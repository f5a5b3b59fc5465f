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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

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
    """Columns of ticks in time order. `trade_id`/`side` are object arrays or None when unknown."""

    time: np.ndarray  # float64, unix seconds
    price: np.ndarray  # float64
    amount: np.ndarray  # float64
    trade_id: np.ndarray | None = None
    side: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.time)
        for name in ("price", "amount", "trade_id", "side"):
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
        )

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
                [np.full(len(p), None, dtype=object) if c is None else c
                 for p, c in zip(parts, cols, strict=True)]
            )

        return cls(
            np.concatenate([p.time for p in parts]),
            np.concatenate([p.price for p in parts]),
            np.concatenate([p.amount for p in parts]),
            opt("trade_id"),
            opt("side"),
        )


def _opt_str(v: object) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return str(v)


def validate(ticks: TickArrays, *, first_row: int = 0) -> None:
    """Reject ticks no model or store should see; raises TickError naming the first bad row.

    `first_row` offsets the reported row numbers (a CSV's first data line, a
    request's first index), so the message points at the place the user edits.
    """
    checks = (
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
        ok = np.isin(ticks.side, (*SIDES, None))
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise TickError(f"side must be 'buy', 'sell' or empty, got {ticks.side[i]!r}", first_row + i)


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
        s = df["trade_id"].str.strip()
        trade_id = np.where(s.to_numpy() == "", None, s.to_numpy()).astype(object)
    if "side" in df.columns:
        s = df["side"].str.strip().str.lower()
        side = np.where(s.to_numpy() == "", None, s.to_numpy()).astype(object)
    ticks = TickArrays(num["time"], num["price"], num["amount"], trade_id, side)
    validate(ticks, first_row=first_line)
    return ticks


def write_csv(ticks: TickArrays, path: str | os.PathLike[str]) -> None:
    """Write plain time,price,amount[,trade_id,side] CSV atomically (temp file + rename)."""
    with atomic_write(path, "w", newline="") as f:
        write_csv_to(ticks, f)


def write_csv_to(ticks: TickArrays, f: io.TextIOBase) -> None:
    header = ["time", "price", "amount"]
    extra = [c for c in ("trade_id", "side") if getattr(ticks, c) is not None]
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header + extra)
    cols = [ticks.time.tolist(), ticks.price.tolist(), ticks.amount.tolist()]
    cols += [["" if v is None else v for v in getattr(ticks, c)] for c in extra]
    w.writerows(zip(*cols, strict=True))
