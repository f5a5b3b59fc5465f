"""A market's coverage: where its ticks have holes, and tick series cut at them.

Two kinds of hole:

- a *time gap*: two successive ticks (in the store's order: time, then arrival) more than
  `gap_s` seconds apart. A quiet market has some, but most come from ticks that were
  never pulled: a feed that was down, days backfilled apart (one set of real trades came
  as 23 runs of minutes with days between them);
- an *id gap*: the market numbers its trades one by one and some numbers were never
  stored: trades the exchange made that the store did not get (a day of Binance trades
  seen here had 111 such runs, 88% of its ids stored).

Features read the move from one tick to the next, so a training window across a hole
learns a move that never happened; training cuts its series at both (`split_at_gaps`).

Id gaps, exactly (one rule, kept by the numpy functions here and by the store's SQL in
`app.market.sqlite_gaps`): a market's ids count as *consecutive* when every tick has one,
each an integer in its plain decimal form ('42' or '-42'; not '042', '+42', '4.2e1' or
'abc') strictly between the int64 bounds, no two alike, and at least `CONSECUTIVE_SHARE`
of the steps between them, taken in id order, are exactly +1. Its id gaps are then the
runs of integers between its smallest and its largest id that no tick has, each told by
the stored ids either side (`after_id`, `before_id`) and their ticks' times. Elsewhere a
missing number means nothing: ids that an exchange shares among all its markets skip on
almost every step, and text ids have no "next". A real feed with holes steps by one almost
everywhere (those 111 runs were 111 steps among hundreds of thousands), so 90% tells the
two apart with room to spare. The rule looks at the set of ids, not their order in time,
so that the store can check it from a few aggregates per thousand ticks; exchanges number
trades in time order, where the two readings agree. A series is cut before the tick whose
id ends a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.market.ticks import TickArrays

CONSECUTIVE_SHARE = 0.9  # of steps between successive ids (in id order) that are exactly +1
DEFAULT_LIMIT = 1000  # gaps of each kind listed; the counts are always complete
INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)  # where SQLite clamps


@dataclass(frozen=True)
class TimeGap:
    """No tick for more than gap_s: `start` and `end` are the times of the ticks either side."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class IdGap:
    """Trade ids after_id + 1 .. before_id - 1 were never stored; `start` and `end` are the
    times of the ticks with after_id and before_id (equal when the hole is inside one time)."""

    after_id: int
    before_id: int
    missing: int
    start: float
    end: float


@dataclass(frozen=True)
class Coverage:
    """A market's holes: every one counted, the first `limit` of each kind listed (time gaps in
    time order, id gaps in id order)."""

    ticks: int
    first_time: float | None
    last_time: float | None
    gap_s: float
    time_gaps: tuple[TimeGap, ...]
    id_gaps: tuple[IdGap, ...]
    time_gap_count: int
    id_gap_count: int
    ids_consecutive: bool  # the module's rule; False: id gaps mean nothing here and none are listed
    missing_ids: int

    @property
    def id_coverage(self) -> float | None:
        """Stored ids among all from the smallest to the largest (None: ids not consecutive)."""
        if not self.ids_consecutive:
            return None
        return self.ticks / (self.ticks + self.missing_ids)

    @property
    def truncated(self) -> bool:
        """Whether more gaps exist than are listed."""
        return len(self.time_gaps) < self.time_gap_count or len(self.id_gaps) < self.id_gap_count

    @classmethod
    def empty(cls, gap_s: float) -> Coverage:
        return cls(0, None, None, gap_s, (), (), 0, 0, False, 0)


def check_gap_s(gap_s: float) -> float:
    """gap_s as a float, or ValueError: a gap threshold is a positive number of seconds."""
    g = float(gap_s)
    if math.isnan(g) or not g > 0:
        raise ValueError(f"gap_s must be a positive number of seconds, got {gap_s!r}")
    return g


def after_gap(time: np.ndarray, gap_s: float) -> np.ndarray:
    """Per step between successive times, whether it is a gap: the later time is past the
    earlier one plus gap_s, added in floating point exactly as the store's SQL adds them, so
    that both find the same gaps to the last bit."""
    return np.asarray(time[1:] > time[:-1] + gap_s)


def consecutive(n: int, runs: int) -> bool:
    """The rule on the counts: n unique plain ids with `runs` runs missing between them."""
    return n >= 2 and (n - 1 - runs) >= CONSECUTIVE_SHARE * (n - 1)


def plain_ids(trade_id: np.ndarray | None) -> np.ndarray | None:
    """The ids as int64 when every one is an integer in its plain decimal form strictly between
    the int64 bounds (SQLite reads larger ones as the bound), else None."""
    if trade_id is None or len(trade_id) == 0:
        return None
    text = np.asarray(trade_id).astype(str)  # None and NaN become 'None' and 'nan': not integers
    try:
        ids = text.astype(np.int64)
    except (ValueError, OverflowError, TypeError):
        return None
    if not np.array_equal(ids.astype(str), text):  # '042', '+42', ' 42': not plain
        return None
    return None if (ids <= INT64_MIN).any() or (ids >= INT64_MAX).any() else ids


def id_runs(ids: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The runs of integers missing between unique `ids`, in id order: (after_id, before_id, and
    the times of their ticks), `times[i]` being the time of the tick with `ids[i]`."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    k = np.flatnonzero(np.diff(s) > 1)
    return s[k], s[k + 1], times[order[k]], times[order[k + 1]]


def consecutive_ids(trade_id: np.ndarray | None) -> np.ndarray | None:
    """The ids as int64 when they count as consecutive (the module's rule), else None."""
    ids = plain_ids(trade_id)
    if ids is None or len(ids) < 2:
        return None
    steps = np.diff(np.sort(ids))
    if (steps == 0).any():  # one trade twice: not a store's ticks, and not numbered one by one
        return None
    return ids if consecutive(len(ids), int(np.count_nonzero(steps > 1))) else None


def gap_cuts(ticks: TickArrays, gap_s: float) -> np.ndarray:
    """Where a new series begins: the index of each tick that follows a time gap over `gap_s`,
    or whose id ends a run of missing ones (where ids are consecutive); sorted, none at 0."""
    cut = np.flatnonzero(after_gap(ticks.time, check_gap_s(gap_s))) + 1
    ids = consecutive_ids(ticks.trade_id)
    if ids is not None:
        order = np.argsort(ids, kind="stable")
        after_hole = order[np.flatnonzero(np.diff(ids[order]) > 1) + 1]
        cut = np.union1d(cut, after_hole[after_hole > 0])
    return cut


def split_at_gaps(ticks: TickArrays, gap_s: float) -> list[TickArrays]:
    """`ticks` (in time order) cut at every gap, in order; none for no ticks. Each piece is a
    slice (a view) of the input."""
    if len(ticks) == 0:
        return []
    bounds = [0, *gap_cuts(ticks, gap_s).tolist(), len(ticks)]
    return [ticks[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
