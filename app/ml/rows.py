"""Per-tick feature columns by name: what a model may see of each tick.

A checkpoint records the names of its columns, and every column is computed from
the ticks alone (no state, no market metadata), so a model serves exactly what it
was trained on and an old checkpoint keeps its own list. Every column is
invariant to the price level: returns, never prices.

Row r describes tick r + 1: the move into it from tick r. The columns past the
ancestor's six tell a net directly what the tick rule infers about the last
trade: which side of the book it most likely hit (the sign of the last price
change, carried over unchanged prices), how big that change was, and for how
many trades the price has stood still. On real trades most of the next-tick
signal is there (issue 13: a tree on the last two rows of plain columns beat
one on thirty-two), and a net finds it faster when it is spelled out.

The tick-rule columns look back at most LOOKBACK rows (a price change further
back reads as none), so a row depends on a bounded stretch of history and a
served window, built from the last seq_len + 1 + LOOKBACK ticks, is exactly the
window training saw at the same tick.

Event columns (`log_fills`, `vwap_offset`) exist only for the event target,
where trades that share a timestamp are merged first (`app.ml.events`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Columns:
    """What the columns are computed from: ticks, or events with their fill counts and VWAP."""

    time: np.ndarray
    price: np.ndarray
    amount: np.ndarray
    fills: np.ndarray | None = None
    vwap: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.price)


LOOKBACK = 16  # rows the tick-rule columns look back over
_LOOKING_BACK = frozenset({"tick_sign", "last_move", "flat_run"})


def lookback(names: Sequence[str]) -> int:
    """The rows of history before a window that its columns read."""
    return LOOKBACK if _LOOKING_BACK & set(names) else 0


@dataclass(frozen=True)
class _Moves:
    """The diffs every column is built from, computed once per matrix."""

    ret: np.ndarray  # log return into each tick
    last: np.ndarray  # the last row with a price change within LOOKBACK rows (self where none)
    found: np.ndarray  # whether there is one
    run: np.ndarray  # rows since it (LOOKBACK + 1 where none)


def _moves(c: Columns) -> _Moves:
    ret = np.diff(np.log(np.asarray(c.price, dtype=np.float64)))
    at = np.arange(len(ret))
    last = np.where(ret != 0, at, -1)
    np.maximum.accumulate(last, out=last)
    found = (last >= 0) & (at - last <= LOOKBACK)
    last = np.where(found, last, at)
    return _Moves(ret, last, found, np.where(found, at - last, LOOKBACK + 1))


def _event_column(c: Columns, which: str) -> np.ndarray:
    values = c.fills if which == "fills" else c.vwap
    if values is None:
        raise ValueError(f"the {which} column exists only for the event target (trades merged per timestamp)")
    return np.asarray(values, dtype=np.float64)[1:]


def _vwap_offset(c: Columns, m: _Moves) -> np.ndarray:
    vwap = _event_column(c, "vwap")
    return np.log(vwap / np.asarray(c.price, dtype=np.float64)[1:])


_COLUMNS: dict[str, Callable[[Columns, _Moves], np.ndarray]] = {
    "log_return": lambda c, m: m.ret,
    "log_amount": lambda c, m: np.log1p(np.asarray(c.amount, dtype=np.float64)[1:]),
    "log_gap": lambda c, m: np.log1p(np.maximum(np.diff(np.asarray(c.time, dtype=np.float64)), 0.0)),
    "up": lambda c, m: (m.ret > 0).astype(np.float64),
    "down": lambda c, m: (m.ret < 0).astype(np.float64),
    "flat": lambda c, m: (m.ret == 0).astype(np.float64),
    # the tick rule: the sign of the last price change, carried over unchanged prices
    "tick_sign": lambda c, m: np.where(m.found, np.sign(m.ret[m.last]), 0.0),
    # the size of that change (a proxy for the spread it crossed)
    "last_move": lambda c, m: np.where(m.found, m.ret[m.last], 0.0),
    # unchanged prices since it (the same order walking one level, or a quiet book)
    "flat_run": lambda c, m: np.log1p(m.run),
    "log_fills": lambda c, m: np.log(_event_column(c, "fills")),
    "vwap_offset": _vwap_offset,
}

NAMES: tuple[str, ...] = tuple(_COLUMNS)
EVENT_ONLY: frozenset[str] = frozenset({"log_fills", "vwap_offset"})


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """`names` as a tuple, or ValueError naming the unknown and duplicate ones."""
    unknown = [n for n in names if n not in _COLUMNS]
    if unknown:
        raise ValueError(f"unknown feature column(s) {unknown}; known: {list(NAMES)}")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"feature columns must be distinct and not empty, got {list(names)}")
    return tuple(names)


def matrix(c: Columns, names: Sequence[str]) -> np.ndarray:
    """(n - 1, len(names)) float32: row r for tick r + 1, the columns in the order given."""
    if len(c) < 2:
        raise ValueError(f"need at least 2 ticks to compute features, got {len(c)}")
    m = _moves(c)
    out = np.empty((len(m.ret), len(names)), dtype=np.float32)
    for k, name in enumerate(names):
        out[:, k] = _COLUMNS[name](c, m)
    return out
