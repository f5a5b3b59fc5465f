"""Trades -> events: the fills of one taker order merged into one row.

Exchanges such as Binance report each maker fill of a taker order as its own
trade, all with the same timestamp. A next-tick model on such fills mostly
learns that an order keeps walking the book (issue 13, item 6); merging the
trades that share a timestamp asks the question that matters to a trader:
where does the next order take the price.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Events:
    """One row per run of consecutive trades with exactly equal time.

    `price` is the run's last trade price (what the next event is compared
    with), `vwap` its volume-weighted price; `first` and `last` index the run's
    trades in the input, so a caller can map an event back to its ticks.
    """

    time: np.ndarray  # float64
    price: np.ndarray  # float64, the last trade's price
    vwap: np.ndarray  # float64; the mean price where the amounts sum to 0
    amount: np.ndarray  # float64, summed
    fills: np.ndarray  # int64, trades merged
    first: np.ndarray  # int64, input index of the first trade
    last: np.ndarray  # int64, input index of the last trade

    def __len__(self) -> int:
        return int(self.time.size)

    def as_ticks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(time, price, amount) as float64, for code that treats each event as a tick."""
        return (
            self.time.astype(np.float64, copy=False),
            self.price.astype(np.float64, copy=False),
            self.amount.astype(np.float64, copy=False),
        )


def _columns(time: np.ndarray, price: np.ndarray, amount: np.ndarray) -> tuple[np.ndarray, ...]:
    t = np.asarray(time, dtype=np.float64)
    p = np.asarray(price, dtype=np.float64)
    a = np.asarray(amount, dtype=np.float64)
    if t.ndim != 1 or p.ndim != 1 or a.ndim != 1:
        raise ValueError(f"time, price and amount must be 1-D, got shapes {t.shape}, {p.shape}, {a.shape}")
    if not t.size == p.size == a.size:
        raise ValueError(f"time, price and amount differ in length: {t.size}, {p.size}, {a.size}")
    back = np.flatnonzero(t[1:] < t[:-1])
    if back.size:
        i = int(back[0]) + 1
        raise ValueError(f"trades must be in time order: trade {i} is earlier than trade {i - 1}")
    return t, p, a


def merge_same_time(time: np.ndarray, price: np.ndarray, amount: np.ndarray) -> Events:
    """Merge each run of consecutive equal-time trades into one event, in O(n).

    Only consecutive trades merge (the input is in time order and is not
    sorted here); equal time means exactly equal.
    """
    t, p, a = _columns(time, price, amount)
    n = t.size
    if n == 0:
        idx = np.empty(0, dtype=np.int64)
        return Events(t.copy(), p.copy(), p.copy(), a.copy(), idx, idx.copy(), idx.copy())
    first = np.concatenate(([0], np.flatnonzero(t[1:] != t[:-1]) + 1)).astype(np.int64)
    last = np.concatenate((first[1:] - 1, [n - 1])).astype(np.int64)
    fills = last - first + 1
    amount_sum = np.add.reduceat(a, first)
    vwap = np.add.reduceat(p, first) / fills  # the mean price, kept where nothing traded
    np.divide(np.add.reduceat(p * a, first), amount_sum, out=vwap, where=amount_sum != 0)
    return Events(
        time=t[first],
        price=p[last],
        vwap=vwap,
        amount=amount_sum,
        fills=fills,
        first=first,
        last=last,
    )
