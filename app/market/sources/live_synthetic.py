"""The synthetic market as a live source: ticks up to "now", as an exchange would have.

A fresh install (and every test of the ingestion loop) needs a feed that behaves
like an exchange without a network: each pull returns the trades that "happened"
since the previous one. The market is opened `history_s` before now so the first
pull brings a history to train on.

A restart must not stall the feed. A new instance opens its market at its own clock,
so replaying the old market up to the stored position would take as long as the
service had been running; instead the cursor carries where the stored ticks end (count,
last time, last price) and a new instance continues from there at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from app.market.sources.base import Page, SourceError, canonical_symbol
from app.market.sources.synthetic import DEFAULT_START_PRICE, SyntheticMarket, SyntheticParams
from app.market.ticks import TickArrays

Resume = tuple[int, tuple[float, float] | None]  # ticks handed out, (time, price) of the last


def parse_cursor(cursor: str) -> Resume:
    """ "<count>:<last time>:<last price>", or an older version's bare "<count>"."""
    count, *rest = cursor.split(":")
    try:
        last = tuple(float(x) for x in rest)
    except ValueError:
        last = (math.nan,)
    ok = count.isdigit() and len(last) in (0, 2) and all(math.isfinite(x) for x in last)
    if not ok or (last and last[1] <= 0):
        raise SourceError(
            f"synthetic: cursor {cursor!r} is not '<tick count>:<last time>:<last price>'; "
            "reset the market's cursor"
        )
    return int(count), ((last[0], last[1]) if last else None)


def format_cursor(count: int, last: tuple[float, float] | None) -> str:
    """repr() round-trips floats exactly, so a parsed cursor compares equal to its ticks."""
    return str(count) if last is None else f"{count}:{last[0]!r}:{last[1]!r}"


class SyntheticSource:
    """A seeded `SyntheticMarket` read up to the clock; the cursor says where it left off.

    Trade ids are the ticks' ordinal numbers, so the count in the cursor is also the
    next id. Given a cursor this instance did not hand out (a restart, or a page that
    was never stored), it resumes from what the cursor says, at once:

    * if its own market, read up to now, is the one the cursor came from (the same seed
      opened at the same time, as a re-run of a backfill over a fixed range is), it
      hands out what follows the cursor's tick;
    * otherwise it continues a fresh market, seeded from (seed, count) so it is
      deterministic, opened at the last tick's time and price: times continue from the
      stored ticks and the gap up to now fills at once, but at most `history_s` of it,
      so a week of downtime is not replayed as a week of ticks in one pull;
    * an older version's cursor (a bare count) has no time or price, so the market
      resumes at the clock, at `start_price`, with ids from that count.
    """

    name = "synthetic"

    def __init__(
        self,
        seed: int = 0,
        history_s: float = 3600.0,
        *,
        clock: Callable[[], float] = time.time,
        start_price: float = DEFAULT_START_PRICE,
        params: SyntheticParams | None = None,
    ) -> None:
        if not (math.isfinite(history_s) and history_s >= 0):
            raise ValueError("history_s must be >= 0")
        self.clock = clock
        self.seed = seed
        self.history_s = history_s
        self.start_price = start_price
        self.params = params
        self.market = SyntheticMarket(
            seed, start_time=clock() - history_s, start_price=start_price, params=params
        )
        self.count = 0  # ticks handed out (or skipped to honour a cursor); the next id
        self._last: tuple[float, float] | None = None  # (time, price) of the last one
        self._cursor: str | None = None  # the cursor this instance handed out last

    def pair(self, symbol: str) -> str:
        """Any well-formed symbol: the synthetic market trades whatever it is called."""
        return canonical_symbol(symbol)

    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page:
        """The ticks since the last fetch up to now (the first fetch: since `start`, if given)."""
        self.pair(symbol)
        now = self.clock()
        ahead = TickArrays.empty()
        if cursor is not None and cursor != self._cursor:
            ahead = self._resume(parse_cursor(cursor), now)
        elif cursor is None and start is not None and self.count == 0:
            if not math.isfinite(start):
                raise ValueError("start must be a finite unix time")
            # Drop the ticks before `start` (the market keeps time order).
            self.count += len(self.market.ticks_until(float(np.nextafter(start, -math.inf))))
        return self._hand_out(TickArrays.concat([ahead, self.market.ticks_until(now)]))

    def _resume(self, at: Resume, now: float) -> TickArrays:
        """Continue from a cursor this instance did not hand out; returns ticks already
        generated past it (when the cursor came from this very market)."""
        count, last = at
        fresh = self.count == 0 and self._cursor is None
        if fresh and count == 0:
            return TickArrays.empty()  # nothing was handed out yet: open as a first start does
        if fresh and last is not None:
            own = self.market.ticks_until(now)
            if len(own) >= count and (float(own.time[count - 1]), float(own.price[count - 1])) == last:
                self.count, self._last = count, last
                return own[count:]
        if last is None:
            begin, price = now, self.start_price
        else:
            begin, price = max(last[0], now - self.history_s), last[1]
        seed = int(np.random.SeedSequence([self.seed, count]).generate_state(1)[0])
        self.market = SyntheticMarket(seed, start_time=begin, start_price=price, params=self.params)
        self.count, self._last = count, last
        return TickArrays.empty()

    def _hand_out(self, ticks: TickArrays) -> Page:
        """Number the ticks from the count (ids never repeat across restarts) and say where
        the next fetch resumes."""
        k = len(ticks)
        if k:
            ids = np.arange(self.count, self.count + k).astype(str).astype(object)
            ticks = TickArrays(ticks.time, ticks.price, ticks.amount, ids, ticks.side)
            self.count += k
            self._last = (float(ticks.time[-1]), float(ticks.price[-1]))
        self._cursor = format_cursor(self.count, self._last)
        return Page(ticks, self._cursor, False)

    async def aclose(self) -> None:
        """Nothing to release."""
